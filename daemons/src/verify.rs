//! verify: address verification (Postfix's verify(8)). smtpd asks what is
//! known about an address (`reject_unverified_recipient`,
//! `reject_unverified_sender`); an address without a usable record is "in
//! progress" and gets a probe. A probe is a request to qmgr over the
//! `probe` edge, which only this role may open: qmgr routes the address as
//! it routes mail and the delivery agent tries it without a message (smtp
//! stops before DATA). Nothing is queued, so no message, sender address or
//! header can pose as a probe or as its result, and only this role writes
//! results (the Postfix 2026 cache-poisoning fix, by construction).
//!
//! Results live in memory and in the state store's `address-verify`
//! namespace, so they survive a restart (`address_verify_map` empty keeps
//! them in memory only, as in Postfix). The rules are verify.c's: a record
//! is answered until it expires, and re-probed once it is older than its
//! refresh time; a failed probe never replaces a deliverable record before
//! that record expires.
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use postern_config::{Params, Role};
use postern_ipc::edge::Answer;
use postern_ipc::{probe, verify};
use serde::{Deserialize, Serialize};

use crate::cache::client::Client as Store;
use crate::daemon::{self, Context};
use crate::peerpool::PeerPool;
use crate::warn;

const NAMESPACE: &str = "address-verify";
/// Probes in flight at once; an address over the limit is answered "in
/// progress" and probed at a later query.
const MAX_PROBES: usize = 256;
/// How long one probe may take (Postfix's PROBE_TTL).
const PROBE_DEADLINE: Duration = Duration::from_secs(1000);
/// Records kept in memory; the store keeps the rest.
const MAX_MEMORY: usize = 20_000;
const IN_PROGRESS: &str = "Address verification in progress";

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Verify, ipc_fd, |params: &Params| {
        let s = Settings::new(params)?;
        Ok((move |ctx: Context| serve(ctx, s), Vec::new()))
    })
}

/// A probe's verdict (Postfix's DEL_RCPT_STAT_{OK,DEFER,BOUNCE}).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Verdict {
    Ok,
    Defer,
    Bounce,
}

/// One address's record, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    verdict: Verdict,
    /// When the probe answered (seconds since the epoch).
    updated: u64,
    text: String,
}

#[derive(Debug, Clone)]
struct Settings {
    /// address_verify_sender, qualified; "" for the null sender.
    sender: String,
    pos_expire: u64,
    pos_refresh: u64,
    neg_expire: u64,
    neg_refresh: u64,
    /// address_verify_negative_cache.
    neg_cache: bool,
    /// address_verify_map is set: records go to the state store too.
    persistent: bool,
}

impl Settings {
    fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let secs = |n: &str| -> Result<u64, String> { Ok(p.duration(n).map_err(e)?.as_secs()) };
        let sender = match p.str("address_verify_sender").trim() {
            "" | "<>" => String::new(),
            s if s.contains('@') => s.to_string(),
            s => format!("{s}@{}", p.str("myorigin")),
        };
        Ok(Settings {
            sender,
            pos_expire: secs("address_verify_positive_expire_time")?,
            pos_refresh: secs("address_verify_positive_refresh_time")?,
            neg_expire: secs("address_verify_negative_expire_time")?,
            neg_refresh: secs("address_verify_negative_refresh_time")?,
            neg_cache: p.bool("address_verify_negative_cache").map_err(e)?,
            persistent: !p.str("address_verify_map").trim().is_empty(),
        })
    }

    fn expire(&self, v: Verdict) -> u64 {
        if v == Verdict::Ok {
            self.pos_expire
        } else {
            self.neg_expire
        }
    }

    /// Without negative caching a failed address is probed again at every
    /// query (its last result is still the answer meanwhile).
    fn refresh(&self, v: Verdict) -> u64 {
        match v {
            Verdict::Ok => self.pos_refresh,
            _ if self.neg_cache => self.neg_refresh,
            _ => 0,
        }
    }

    fn live(&self, r: &Record, now: u64) -> bool {
        r.updated.saturating_add(self.expire(r.verdict)) > now
    }
}

/// What a query answers, and whether the address wants a probe.
fn consult(rec: Option<&Record>, now: u64, s: &Settings) -> (verify::Reply, bool) {
    match rec {
        Some(r) if s.live(r, now) => {
            let status = match r.verdict {
                Verdict::Ok => verify::Status::Deliverable,
                Verdict::Defer => verify::Status::Deferred,
                Verdict::Bounce => verify::Status::Undeliverable,
            };
            let stale = r.updated.saturating_add(s.refresh(r.verdict)) <= now;
            (
                verify::Reply {
                    status,
                    text: r.text.clone(),
                },
                stale,
            )
        }
        _ => (
            verify::Reply {
                status: verify::Status::InProgress,
                text: IN_PROGRESS.into(),
            },
            true,
        ),
    }
}

/// A probe's result merged into what is known: a failed probe never
/// replaces a deliverable record that has not expired (so a next hop that
/// hiccups does not turn good addresses bad; the next query probes again).
fn merge(
    old: Option<&Record>,
    verdict: Verdict,
    text: &str,
    now: u64,
    s: &Settings,
) -> Option<Record> {
    let keep_old =
        verdict != Verdict::Ok && old.is_some_and(|o| o.verdict == Verdict::Ok && s.live(o, now));
    (!keep_old).then(|| Record {
        verdict,
        updated: now,
        text: printable(text),
    })
}

/// The reason as smtpd may quote it: printable ASCII, bounded.
fn printable(t: &str) -> String {
    t.chars()
        .take(verify::MAX_TEXT)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

struct State {
    s: Settings,
    memory: HashMap<String, Record>,
    /// Addresses with a probe in flight.
    probing: HashSet<String>,
}

impl State {
    fn remember(&mut self, key: String, r: Record, now: u64) {
        if self.memory.len() >= MAX_MEMORY && !self.memory.contains_key(&key) {
            let s = &self.s;
            self.memory.retain(|_, r| s.live(r, now));
            if self.memory.len() >= MAX_MEMORY {
                // The store still has them.
                self.memory.clear();
            }
        }
        self.memory.insert(key, r);
    }
}

struct Shared {
    st: RefCell<State>,
    store: Store,
    qmgr: PeerPool<probe::Link>,
}

fn now() -> u64 {
    crate::clock::now_us() / 1_000_000
}

async fn serve(mut ctx: Context, s: Settings) {
    if s.pos_refresh >= s.pos_expire || s.neg_refresh >= s.neg_expire {
        warn!(
            "an address_verify_*_refresh_time is not below its expire time: records expire before they are refreshed"
        );
    }
    let shared = Rc::new(Shared {
        st: RefCell::new(State {
            s,
            memory: HashMap::new(),
            probing: HashSet::new(),
        }),
        store: Store::new(ctx.switchboard.clone(), NAMESPACE),
        qmgr: PeerPool::new(ctx.switchboard.clone(), Role::Qmgr, PROBE_DEADLINE, 16),
    });
    let timeout = ctx.query_timeout();
    crate::daemon::serve_channels(&mut ctx, |from, fd| {
        channel(shared.clone(), from, fd, timeout)
    })
    .await;
}

async fn channel(shared: Rc<Shared>, from: Role, fd: OwnedFd, timeout: Duration) {
    crate::edges::serve::<verify::Link, _, _>(Role::Verify, from, fd, timeout, |req| {
        let shared = shared.clone();
        async move { Answer::Reply(query(&shared, req.address).await) }
    })
    .await;
}

async fn query(shared: &Rc<Shared>, address: String) -> verify::Reply {
    let now = now();
    let known = shared.st.borrow().memory.get(&address).cloned();
    let rec = match known {
        Some(r) => Some(r),
        None if shared.st.borrow().s.persistent => {
            let stored = shared
                .store
                .get(&address)
                .await
                .and_then(|(v, _)| postcard::from_bytes::<Record>(&v).ok());
            if let Some(r) = &stored {
                shared
                    .st
                    .borrow_mut()
                    .remember(address.clone(), r.clone(), now);
            }
            stored
        }
        None => None,
    };
    let mut st = shared.st.borrow_mut();
    let (reply, wants_probe) = consult(rec.as_ref(), now, &st.s);
    if wants_probe && st.probing.len() < MAX_PROBES && st.probing.insert(address.clone()) {
        let sender = st.s.sender.clone();
        tokio::task::spawn_local(run_probe(shared.clone(), address, sender));
    }
    reply
}

async fn run_probe(shared: Rc<Shared>, address: String, sender: String) {
    let req = probe::Request {
        address: address.clone(),
        sender,
    };
    let verdict = match shared.qmgr.call(&req).await {
        Ok(r) => match r.status {
            probe::Status::Deliverable => Some((Verdict::Ok, r.text)),
            probe::Status::Deferred => Some((Verdict::Defer, r.text)),
            probe::Status::Undeliverable => Some((Verdict::Bounce, r.text)),
            probe::Status::NotTried => None,
        },
        Err(e) => {
            warn!("probe of <{address}>: {e}");
            None
        }
    };
    let now = now();
    let stored = {
        let mut st = shared.st.borrow_mut();
        st.probing.remove(&address);
        let Some((verdict, text)) = verdict else {
            return;
        };
        let old = st.memory.get(&address).cloned();
        let Some(rec) = merge(old.as_ref(), verdict, &text, now, &st.s) else {
            return;
        };
        st.remember(address.clone(), rec.clone(), now);
        st.s.persistent.then(|| (rec, st.s.expire(verdict)))
    };
    if let Some((rec, ttl)) = stored {
        match postcard::to_allocvec(&rec) {
            Ok(v) => {
                shared
                    .store
                    .put(&address, v, Duration::from_secs(ttl))
                    .await
            }
            Err(e) => warn!("cannot encode an address-verify record: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            sender: "double-bounce@mx.example".into(),
            pos_expire: 31 * 86400,
            pos_refresh: 7 * 86400,
            neg_expire: 3 * 86400,
            neg_refresh: 3 * 3600,
            neg_cache: true,
            persistent: true,
        }
    }

    fn rec(verdict: Verdict, updated: u64) -> Record {
        Record {
            verdict,
            updated,
            text: "said".into(),
        }
    }

    #[test]
    fn unknown_and_expired_addresses_are_in_progress_and_probed() {
        let s = settings();
        let (r, probe) = consult(None, 1000, &s);
        assert_eq!(r.status, verify::Status::InProgress);
        assert_eq!(r.text, IN_PROGRESS);
        assert!(probe);
        let old = rec(Verdict::Ok, 1000);
        let (r, probe) = consult(Some(&old), 1000 + s.pos_expire, &s);
        assert_eq!(r.status, verify::Status::InProgress);
        assert!(probe);
    }

    #[test]
    fn records_answer_until_they_expire_and_refresh_after_their_refresh_time() {
        let s = settings();
        let ok = rec(Verdict::Ok, 1000);
        let (r, probe) = consult(Some(&ok), 1000 + 60, &s);
        assert_eq!(r.status, verify::Status::Deliverable);
        assert!(!probe);
        let (r, probe) = consult(Some(&ok), 1000 + s.pos_refresh, &s);
        assert_eq!(r.status, verify::Status::Deliverable);
        assert!(probe, "a stale positive record is refreshed");
        let bad = rec(Verdict::Bounce, 1000);
        let (r, probe) = consult(Some(&bad), 1000 + 60, &s);
        assert_eq!(r.status, verify::Status::Undeliverable);
        assert!(!probe);
        assert!(consult(Some(&bad), 1000 + s.neg_refresh, &s).1);
        let (r, _) = consult(Some(&rec(Verdict::Defer, 1000)), 1060, &s);
        assert_eq!(r.status, verify::Status::Deferred);
        // Without negative caching, a failed address is probed every time.
        let s = Settings {
            neg_cache: false,
            ..settings()
        };
        let (r, probe) = consult(Some(&bad), 1001, &s);
        assert_eq!(r.status, verify::Status::Undeliverable);
        assert!(probe);
    }

    #[test]
    fn a_failed_probe_never_clobbers_a_live_deliverable_record() {
        let s = settings();
        let ok = rec(Verdict::Ok, 1000);
        assert_eq!(merge(Some(&ok), Verdict::Bounce, "550", 2000, &s), None);
        assert_eq!(merge(Some(&ok), Verdict::Defer, "451", 2000, &s), None);
        let m = merge(Some(&ok), Verdict::Ok, "250", 2000, &s).unwrap();
        assert_eq!((m.verdict, m.updated), (Verdict::Ok, 2000));
        // Once the deliverable record expired, the failure counts.
        let m = merge(Some(&ok), Verdict::Bounce, "550", 1000 + s.pos_expire, &s).unwrap();
        assert_eq!(m.verdict, Verdict::Bounce);
        // A failure replaces a failure; a success replaces anything.
        let bad = rec(Verdict::Defer, 1000);
        assert_eq!(
            merge(Some(&bad), Verdict::Bounce, "550", 1500, &s)
                .unwrap()
                .verdict,
            Verdict::Bounce
        );
        assert_eq!(
            merge(None, Verdict::Ok, "250", 1500, &s).unwrap().verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn reasons_are_printable_and_bounded() {
        let m = merge(None, Verdict::Bounce, "550\r\nx\u{7f}é", 1, &settings()).unwrap();
        assert_eq!(m.text, "550??x??");
        let long = "a".repeat(5000);
        assert_eq!(printable(&long).len(), verify::MAX_TEXT);
    }

    #[test]
    fn records_round_trip_through_the_store_format() {
        let r = rec(Verdict::Defer, 42);
        let v = postcard::to_allocvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<Record>(&v).unwrap(), r);
        assert!(postcard::from_bytes::<Record>(&v[..v.len() - 1]).is_err());
    }
}
