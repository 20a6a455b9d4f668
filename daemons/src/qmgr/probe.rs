//! Address-verification probes, for the verify role only (the peer graph
//! lets no other role open the `probe` edge). A probe is routed as mail is
//! (with address_verify_relayhost and address_verify_transport_maps) and
//! handed to the delivery agent as a request without a queue file: smtp
//! sends MAIL and RCPT and stops before DATA; local checks that the
//! recipient would be delivered. Nothing is queued, and the result goes
//! back only on the channel verify opened.
use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::deliver::{self, Status};
use postern_ipc::edge::Answer;
use postern_ipc::probe::{self, Reply};

use super::Settings;
use super::agents::Agents;
use super::load::resolve;
use super::sched::Route;
use crate::tablecache::TableCache;

pub struct Prober {
    pub agents: Rc<Agents>,
    pub tables: Rc<TableCache>,
    pub s: Rc<Settings>,
    /// Probes in flight (address_verify_pending_request_limit).
    pub pending: Cell<usize>,
    /// Numbers the probes' pseudo queue ids, for the log.
    pub serial: Cell<u32>,
}

/// Serves one channel from verify.
pub async fn serve(p: Rc<Prober>, from: Role, fd: OwnedFd, timeout: Duration) {
    crate::edges::serve::<probe::Link, _, _>(Role::Qmgr, from, fd, timeout, |req| {
        let p = p.clone();
        async move { Answer::Reply(p.probe(req).await) }
    })
    .await;
}

fn reply(status: probe::Status, dsn: &str, text: &str) -> Reply {
    Reply {
        status,
        dsn: dsn.into(),
        text: text.into(),
    }
}

impl Prober {
    async fn probe(&self, req: probe::Request) -> Reply {
        if self.pending.get() >= self.s.probe_limit {
            return reply(
                probe::Status::NotTried,
                "4.3.2",
                "too many address verification requests",
            );
        }
        // Counted until the probe ends, or until its future is dropped.
        struct InFlight<'a>(&'a Cell<usize>);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get().saturating_sub(1));
            }
        }
        self.pending.set(self.pending.get() + 1);
        let _in_flight = InFlight(&self.pending);
        self.route(req).await
    }

    async fn route(&self, req: probe::Request) -> Reply {
        let (agent, nexthop) = match resolve(
            &self.s,
            &self.s.verify_route,
            &self.tables,
            &req.sender,
            &req.address,
        )
        .await
        {
            Route::Local => (Role::Local, String::new()),
            Route::Smtp(h) => (Role::Smtp, h),
            Route::Error(text) => return reply(probe::Status::Undeliverable, "5.0.0", &text),
            Route::Discard => return reply(probe::Status::Deliverable, "2.0.0", "discarded"),
            Route::Defer(text) => return reply(probe::Status::Deferred, "4.3.0", &text),
        };
        let serial = self.serial.get().wrapping_add(1);
        self.serial.set(serial);
        let now = crate::clock::now_us();
        let request = deliver::Request {
            queue_id: format!("VRFY{serial:08X}"),
            sender: req.sender,
            nexthop,
            recipients: vec![deliver::Recipient {
                index: 0,
                address: req.address,
                orcpt: String::new(),
                notify: 0,
            }],
            envid: String::new(),
            ret: 0,
            smtputf8: false,
            body_8bit: false,
            arrival_us: now,
            active_us: now,
            size: 0,
            file: None,
        };
        match self.agents.deliver(agent, request).await {
            Ok(r) => match r.results.into_iter().find(|x| x.index == 0) {
                Some(x) => reply(
                    match x.status {
                        Status::Sent => probe::Status::Deliverable,
                        Status::Deferred => probe::Status::Deferred,
                        Status::Bounced => probe::Status::Undeliverable,
                    },
                    &x.dsn,
                    &x.text,
                ),
                None => reply(
                    probe::Status::Deferred,
                    "4.3.0",
                    &format!("no result from the {agent} delivery agent"),
                ),
            },
            // Our own trouble says nothing about the address: verify
            // records nothing and asks again at a later query.
            Err(e) => {
                crate::warn!("address verification probe: {e}");
                reply(probe::Status::NotTried, "4.3.0", &e)
            }
        }
    }
}
