//! Postern's IPC: length-limited Cap'n Proto frames over SEQPACKET Unix
//! sockets, one schema per edge of the process graph, descriptors beside
//! frames as SCM_RIGHTS.
//!
//! Rules every decoder follows: the frame length is checked against the
//! edge's maximum before anything is allocated for it; the Cap'n Proto
//! reader runs with explicit traversal and nesting limits; every text field
//! is valid UTF-8 without control characters and under a cap; every list and
//! number is range-checked; descriptor counts must match the message.
#![forbid(unsafe_code)]

pub mod admin_qmgr;
pub mod auth;
pub mod blocking;
pub mod bounce;
pub mod cache;
pub mod channel;
pub mod cleanup_broker;
pub mod control;
pub mod deliver;
pub mod edge;
pub mod frame;
#[rustfmt::skip]
pub mod generated;
pub mod keys;
pub mod listener;
pub mod master;
pub mod metrics;
pub mod milter;
pub mod policy;
pub mod postscreen_smtpd;
pub mod probe;
pub mod proxymap;
pub mod qmgr_broker;
pub mod qmgr_queue;
pub mod resolver;
pub mod sendmail_pickup;
pub mod smtpd_broker;
pub mod smtpd_cleanup;
pub mod sts;
pub mod verify;

pub use channel::{Channel, ChannelError, Endpoint, Message};
pub use frame::Violation;

#[cfg(test)]
mod tests;

/// Entry points shared by the fuzz targets and the corpus-replay test.
#[doc(hidden)]
pub mod fuzzing {
    use crate::channel::Message;

    /// Decodes `data` as every message type; must never panic. Whatever
    /// decodes must re-encode and decode to the same value.
    /// Representative valid frames, used to seed the fuzz corpus.
    pub fn seeds() -> Vec<Vec<u8>> {
        use crate::control::{ProcessInfo, Reply, Request};
        use crate::master::FromDaemon;
        vec![
            FromDaemon::Ready {
                landlock: "fully_enforced".into(),
                landlock_abi: 7,
                netns: "private".into(),
            }
            .encode(),
            FromDaemon::Connect {
                request_id: 1,
                peer_role: "cleanup".into(),
            }
            .encode(),
            FromDaemon::Connections { opened: 3, open: 1 }.encode(),
            crate::keys::Request::Sign {
                key: crate::keys::KeyRole::Server,
                scheme: 0x0403,
                message: vec![0x20; 130],
            }
            .encode(),
            crate::keys::Reply::Identity(crate::keys::Identity {
                chain: vec![vec![0x30, 0x82, 0x01, 0x00]],
                schemes: vec![0x0403],
                algorithm: 3,
            })
            .encode(),
            crate::master::ToDaemon::Shutdown.encode(),
            crate::resolver::Reply::Tlsa {
                secure: true,
                records: vec![crate::resolver::Tlsa {
                    usage: 3,
                    selector: 1,
                    matching: 1,
                    data: vec![0xab; 32],
                }],
            }
            .encode(),
            crate::sts::Request::Count(crate::sts::Count {
                domain: "example.com".into(),
                kind: "sts".into(),
                strings: vec!["version: STSv1".into(), "mode: enforce".into()],
                mx: vec!["*.example.com".into()],
                success: false,
                result_type: "certificate-not-trusted".into(),
                sending_ip: String::new(),
                mx_host: "mx1.example.com".into(),
                receiving_ip: "192.0.2.25".into(),
            })
            .encode(),
            crate::resolver::Reply::HostSec {
                secure: false,
                name: "host.example".into(),
                addrs: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 25))],
            }
            .encode(),
            crate::qmgr_broker::Event {
                message: crate::qmgr_broker::QueuedMessage {
                    queue_id: "4cK2xQ7m9nTzB1".into(),
                    arrival_us: 1_700_000_000_000_000,
                    size: 1024,
                    nrcpt: 1,
                    due_us: 0,
                    envelope: Some(crate::qmgr_broker::Envelope {
                        sender: "alerts@fw.example".into(),
                        envid: String::new(),
                        ret: 0,
                        smtputf8: false,
                        body_8bit: false,
                        trace: false,
                        recipients: vec![crate::qmgr_broker::Recipient {
                            address: "ops@example.org".into(),
                            orcpt: String::new(),
                            notify: 0,
                        }],
                    }),
                },
                file: None,
            }
            .encode(),
            crate::qmgr_queue::Request::Append {
                queue_id: "4cK2xQ7m9nTzB1".into(),
                states: vec![crate::qmgr_queue::State::NextAttempt {
                    at_us: 1_700_000_300_000_000,
                    attempts: 1,
                }],
                give_back: Some(1_700_000_300_000_000),
            }
            .encode(),
            crate::qmgr_queue::Reply::Listed(
                vec![crate::qmgr_queue::Listed {
                    queue_id: "4cK2xQ7m9nTzB1".into(),
                    place: crate::qmgr_queue::Place::Deferred,
                    due_us: 1_700_000_300_000_000,
                }],
                17,
            )
            .encode(),
            Request::Status.encode(),
            Request::Reload("smtpd".into()).encode(),
            Reply::Status(vec![ProcessInfo {
                role: "smtpd".into(),
                pid: 42,
                uid: 60202,
                gid: 60202,
                no_new_privs: true,
                seccomp: 2,
                cap_eff: "0000000000000000".into(),
                landlock: "fully_enforced".into(),
                netns: "private".into(),
                state: "running".into(),
                restarts: 0,
                nofile: 1024,
            }])
            .encode(),
            crate::milter::Request::Session(crate::milter::Open {
                milter: String::new(),
                macros: vec![("{client_addr}".into(), "192.0.2.1".into())],
                host: "client.example".into(),
                addr: "192.0.2.1".into(),
                port: 25,
                helo: String::new(),
                mail: Vec::new(),
            })
            .encode(),
            crate::milter::Request::Attach {
                ticket: 7,
                milter: "inet:127.0.0.1:8891".into(),
            }
            .encode(),
            crate::milter::Reply::Verdict(crate::milter::Verdict::of(
                crate::milter::Outcome::Reject,
            ))
            .encode(),
        ]
    }

    /// A maildrop file as pickup reads it: frames one after another, each
    /// a sendmail_pickup request that survives a round trip.
    pub fn maildrop_file(data: &[u8]) {
        use crate::channel::Message;
        use crate::sendmail_pickup::{Request, file_frames};
        for f in file_frames(data) {
            let Ok(f) = f else { break };
            assert!(f.len() >= crate::frame::HEADER);
            if let Ok(m) = Request::decode(f, Vec::new()) {
                assert_eq!(Request::decode(&m.encode(), Vec::new()).ok(), Some(m));
            }
        }
    }

    pub fn decode_any(data: &[u8]) {
        use crate::*;
        /// Decode; whatever decodes must survive a round trip unchanged.
        macro_rules! round_trip {
            ($($t:ty),*) => {$(
                if let Ok(m) = <$t>::decode(data, Vec::new()) {
                    assert_eq!(<$t>::decode(&m.encode(), Vec::new()).ok(), Some(m));
                }
            )*};
        }
        round_trip!(
            master::FromDaemon,
            control::Request,
            smtpd_cleanup::Request,
            smtpd_cleanup::Reply,
            cleanup_broker::Request,
            qmgr_broker::Request,
            smtpd_broker::Request,
            smtpd_broker::Reply,
            qmgr_queue::Request,
            deliver::Reply,
            bounce::Reply,
            admin_qmgr::Request,
            admin_qmgr::Reply,
            resolver::Request,
            resolver::Reply,
            sendmail_pickup::Request,
            sendmail_pickup::Reply,
            keys::Request,
            keys::Reply,
            auth::Request,
            auth::Reply,
            cache::Request,
            cache::Reply,
            proxymap::Request,
            proxymap::Reply,
            verify::Request,
            verify::Reply,
            probe::Request,
            probe::Reply,
            policy::Request,
            policy::Reply,
            milter::Request,
            milter::Reply,
            postscreen_smtpd::Reply,
            sts::Request,
            sts::Reply
        );
        // Messages that carry descriptors cannot round-trip without them.
        let _ = master::ToDaemon::decode(data, Vec::new());
        let _ = cleanup_broker::Reply::decode(data, Vec::new());
        let _ = qmgr_broker::Event::decode(data, Vec::new());
        let _ = control::Reply::decode(data, Vec::new());
        let _ = qmgr_queue::Reply::decode(data, Vec::new());
        let _ = deliver::Request::decode(data, Vec::new());
        let _ = bounce::Request::decode(data, Vec::new());
        let _ = postscreen_smtpd::Request::decode(data, Vec::new());
    }
}
