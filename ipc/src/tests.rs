//! IPC framing tests over real SEQPACKET socket pairs.
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use postern_sandbox::fdpass;

use crate::channel::{Channel, ChannelError, Endpoint, Message};
use crate::control::{Reply, Request};
use crate::frame::{self, Violation};
use crate::generated::{control_capnp, master_capnp};
use crate::master::{FromDaemon, ToDaemon};

#[test]
fn schema_snapshots_match_generated_code() {
    // Fails on any machine when a schema changed without regenerating.
    macro_rules! pairs {
        ($($name:literal),*) => {
            [$((
                $name,
                include_str!(concat!("../schema/", $name, ".capnp")),
                include_str!(concat!("generated/", $name, ".capnp.snapshot")),
            )),*]
        };
    }
    let pairs = pairs!(
        "common",
        "master",
        "control",
        "smtpd_cleanup",
        "cleanup_broker",
        "qmgr_broker",
        "smtpd_broker",
        "qmgr_queue",
        "deliver",
        "bounce",
        "admin_qmgr",
        "resolver",
        "keys",
        "auth",
        "cache",
        "sendmail_pickup",
        "proxymap",
        "verify",
        "probe",
        "metrics",
        "policy",
        "milter",
        "postscreen_smtpd",
        "sts"
    );
    for (name, schema, snap) in pairs {
        assert_eq!(
            schema, snap,
            "{name}.capnp changed: run `cargo run -p postern-ipc-codegen`"
        );
    }
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schema"))
        .unwrap()
        .count();
    assert_eq!(
        on_disk,
        pairs.len(),
        "a schema file is not covered by this test"
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn round_trip_every_master_message() {
    for m in [
        FromDaemon::Ready {
            landlock: "fully_enforced".into(),
            landlock_abi: 7,
            netns: "private".into(),
        },
        FromDaemon::Connect {
            request_id: 9,
            peer_role: "cleanup".into(),
        },
        FromDaemon::Connections { opened: 1, open: 1 },
        FromDaemon::Connections { opened: 0, open: 0 },
    ] {
        assert_eq!(FromDaemon::decode(&m.encode(), vec![]).unwrap(), m);
    }
    let r = Request::Reload("smtpd".into());
    assert_eq!(Request::decode(&r.encode(), vec![]).unwrap(), r);
}

#[test]
fn oversize_frames_are_refused_before_allocation() {
    // A header claiming 2 GiB: refused from the header alone.
    let mut f = vec![0u8; 16];
    f[..4].copy_from_slice(&(0x8000_0000u32).to_le_bytes());
    assert!(matches!(
        FromDaemon::decode(&f, vec![]),
        Err(Violation::TooLarge { max: 8192, .. })
    ));
    // A real frame over the edge's limit, sent through a socket: the
    // receiver's fixed buffer reports truncation as TooLarge.
    rt().block_on(async {
        let (a, b) = fdpass::seqpacket_pair().unwrap();
        let tx = Channel::new(a, 64 * 1024, Duration::from_secs(1)).unwrap();
        let mut rx: Endpoint<ToDaemon, FromDaemon> =
            Endpoint::new(b, Duration::from_secs(1)).unwrap();
        let big = vec![0u8; 20_000];
        tx.send(&big, &[]).await.unwrap();
        match rx.recv().await {
            Err(ChannelError::Violation(Violation::TooLarge { .. })) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    });
}

#[test]
fn segment_table_bomb_is_refused() {
    // A valid-looking header with a segment table claiming 2^29 words.
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_le_bytes()); // one segment
    body.extend_from_slice(&(1u32 << 29).to_le_bytes());
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&body);
    assert!(matches!(
        FromDaemon::decode(&f, vec![]),
        Err(Violation::Capnp(_))
    ));
}

#[test]
fn control_characters_and_bad_utf8_are_refused() {
    let mut b = frame::builder();
    {
        let mut r = b.init_root::<master_capnp::from_daemon::Builder>();
        let mut c = r.reborrow().init_connect();
        c.set_request_id(1);
        c.set_peer_role("cleanup\r\nbroker");
    }
    let f = frame::finish(&b);
    match FromDaemon::decode(&f, vec![]) {
        Err(Violation::Field { field, why }) => {
            assert_eq!(field, "connect.peerRole");
            assert!(why.contains("U+000D"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let mut b = frame::builder();
    {
        let mut r = b.init_root::<master_capnp::from_daemon::Builder>();
        let mut c = r.reborrow().init_connect();
        c.set_request_id(1);
        c.set_peer_role(capnp::text::Reader::from(&[0xff, 0xfe][..]));
    }
    assert!(matches!(
        FromDaemon::decode(&frame::finish(&b), vec![]),
        Err(Violation::Field { why, .. }) if why.contains("UTF-8")
    ));
}

#[test]
fn truncated_frames_are_refused() {
    let f = FromDaemon::Connect {
        request_id: 3,
        peer_role: "broker".into(),
    }
    .encode();
    // Header intact, body cut short.
    assert!(matches!(
        FromDaemon::decode(&f[..f.len() - 8], vec![]),
        Err(Violation::LengthMismatch { .. })
    ));
    // Body cut short and header adjusted to match: capnp sees a short segment.
    let mut cut = f[..f.len() - 8].to_vec();
    let n = (cut.len() - 4) as u32;
    cut[..4].copy_from_slice(&n.to_le_bytes());
    assert!(matches!(
        FromDaemon::decode(&cut, vec![]),
        Err(Violation::Capnp(_))
    ));
    assert!(matches!(
        FromDaemon::decode(&f[..2], vec![]),
        Err(Violation::Short)
    ));
    // Trailing bytes after a complete message.
    let mut extra = f.clone();
    extra.extend_from_slice(&[0u8; 8]);
    let n = (extra.len() - 4) as u32;
    extra[..4].copy_from_slice(&n.to_le_bytes());
    assert!(FromDaemon::decode(&extra, vec![]).is_err());
}

#[test]
fn wrong_versions_are_refused() {
    let mut b = frame::builder();
    {
        let mut r = b.init_root::<control_capnp::request::Builder>();
        r.set_version(crate::control::VERSION + 1);
        r.set_status(());
    }
    assert!(matches!(
        Request::decode(&frame::finish(&b), vec![]),
        Err(Violation::Version { .. })
    ));
    let mut b = frame::builder();
    {
        let r = b.init_root::<master_capnp::to_daemon::Builder>();
        let mut s = r.init_setup();
        s.set_version(crate::master::VERSION + 7);
        s.set_role("smtpd");
    }
    assert!(matches!(
        ToDaemon::decode(&frame::finish(&b), vec![]),
        Err(Violation::Version { .. })
    ));
    // The handshake between daemons refuses a different version and says so.
    rt().block_on(async {
        let (a, b) = fdpass::seqpacket_pair().unwrap();
        let mut client = Channel::new(a, 1024, Duration::from_secs(2)).unwrap();
        let mut server = Channel::new(b, 1024, Duration::from_secs(2)).unwrap();
        let (c, s) = tokio::join!(
            client.hello_client("smtpd-cleanup", 2),
            server.hello_server("smtpd-cleanup", 1)
        );
        assert!(matches!(
            c,
            Err(ChannelError::Violation(Violation::Version { .. }))
        ));
        assert!(matches!(
            s,
            Err(ChannelError::Violation(Violation::Version {
                got: 2,
                want: 1
            }))
        ));
    });
}

#[test]
fn descriptor_round_trip_and_count_checks() {
    rt().block_on(async {
        let (a, b) = fdpass::seqpacket_pair().unwrap();
        let tx: Endpoint<ToDaemon, FromDaemon> = Endpoint::new(a, Duration::from_secs(1)).unwrap();
        let mut rx: Endpoint<FromDaemon, ToDaemon> =
            Endpoint::new(b, Duration::from_secs(1)).unwrap();
        let path = std::env::temp_dir().join(format!("postern-ipc-fd-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.write_all(b"queue file body").unwrap();
        tx.send(&ToDaemon::Peer {
            request_id: 4,
            peer_role: "broker".into(),
            fd: file.try_clone().unwrap().into(),
        })
        .await
        .unwrap();
        match rx.recv().await.unwrap() {
            ToDaemon::Peer {
                request_id: 4,
                peer_role,
                fd,
            } => {
                assert_eq!(peer_role, "broker");
                let mut f = std::fs::File::from(fd);
                f.rewind().unwrap();
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                assert_eq!(s, "queue file body");
            }
            other => panic!("{other:?}"),
        }
        // A Peer frame without its descriptor is a violation.
        let frame = ToDaemon::Peer {
            request_id: 5,
            peer_role: "broker".into(),
            fd: file.try_clone().unwrap().into(),
        }
        .encode();
        tx.channel_ref().send(&frame, &[]).await.unwrap();
        assert!(matches!(
            rx.recv().await,
            Err(ChannelError::Violation(Violation::FdCount {
                got: 0,
                want: 1
            }))
        ));
        // Descriptors on a frame that must carry none are a violation too.
        let (x, _y) = fdpass::seqpacket_pair().unwrap();
        tx.channel_ref()
            .send(&ToDaemon::Shutdown.encode(), &[x.as_fd()])
            .await
            .unwrap();
        assert!(matches!(
            rx.recv().await,
            Err(ChannelError::Violation(Violation::FdCount {
                got: 1,
                want: 0
            }))
        ));
    });
}

/// A reload carries one descriptor per opened file, in order; a file the
/// master could not open travels as its error alone.
#[test]
fn reload_files_keep_their_order_and_count() {
    use crate::master::{OpenedFile, Reload};
    rt().block_on(async {
        let (a, b) = fdpass::seqpacket_pair().unwrap();
        let tx: Endpoint<ToDaemon, FromDaemon> = Endpoint::new(a, Duration::from_secs(1)).unwrap();
        let mut rx: Endpoint<FromDaemon, ToDaemon> =
            Endpoint::new(b, Duration::from_secs(1)).unwrap();
        let dir = std::env::temp_dir().join(format!("postern-ipc-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let open = |name: &str| {
            let p = dir.join(name);
            std::fs::write(&p, name).unwrap();
            OpenedFile {
                path: p.display().to_string(),
                file: Ok(std::fs::File::open(&p).unwrap().into()),
            }
        };
        let files = vec![
            open("chain.pem"),
            OpenedFile {
                path: "/etc/missing.pem".into(),
                file: Err("No such file or directory".into()),
            },
            open("client.pem"),
        ];
        tx.send(&ToDaemon::Reload(Reload {
            params: vec![("smtpd_tls_chain_files".into(), "chain.pem".into())],
            files,
        }))
        .await
        .unwrap();
        let ToDaemon::Reload(r) = rx.recv().await.unwrap() else {
            panic!("not a reload")
        };
        assert_eq!(r.params.len(), 1);
        let got: Vec<String> = r
            .files
            .into_iter()
            .map(|f| match f.file {
                Ok(fd) => {
                    let mut s = String::new();
                    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
                    s
                }
                Err(e) => format!("error: {e}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                "chain.pem",
                "error: No such file or directory",
                "client.pem"
            ]
        );
        // Fewer descriptors than opened files is a violation.
        let frame = ToDaemon::Reload(Reload {
            params: vec![],
            files: vec![open("a.pem"), open("b.pem")],
        })
        .encode();
        let one = std::fs::File::open(dir.join("a.pem")).unwrap();
        tx.channel_ref().send(&frame, &[one.as_fd()]).await.unwrap();
        assert!(matches!(
            rx.recv().await,
            Err(ChannelError::Violation(Violation::FdCount {
                got: 1,
                want: 2
            }))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn stalled_peer_hits_the_deadline() {
    rt().block_on(async {
        let (a, b) = fdpass::seqpacket_pair().unwrap();
        let mut client: Endpoint<Request, Reply> =
            Endpoint::new(a, Duration::from_millis(200)).unwrap();
        let _silent = b; // reads nothing, answers nothing
        let t = Instant::now();
        let r = client.call(&Request::Status).await;
        assert!(matches!(r, Err(ChannelError::Timeout(_))), "{r:?}");
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(200) && e < Duration::from_secs(5),
            "{e:?}"
        );
        // A peer that never drains its queue stalls our sends: the write
        // deadline fires as well.
        let t = Instant::now();
        let mut last = Ok(());
        for _ in 0..10_000 {
            last = client.send(&Request::Status).await;
            if last.is_err() {
                break;
            }
        }
        assert!(matches!(last, Err(ChannelError::Timeout(_))), "{last:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn closed_peer_is_reported_as_closed() {
    rt().block_on(async {
        let (a, b) = fdpass::seqpacket_pair().unwrap();
        let mut client: Endpoint<Request, Reply> =
            Endpoint::new(a, Duration::from_secs(1)).unwrap();
        drop(b);
        assert!(matches!(client.recv().await, Err(ChannelError::Closed)));
        assert!(matches!(
            client.send(&Request::Stop).await,
            Err(ChannelError::Closed)
        ));
    });
}

/// Feeds every file of fuzz/corpus/TARGET and fuzz/regressions/TARGET to
/// `f`; returns how many there were.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in rd.flatten() {
            f(&std::fs::read(e.path()).unwrap());
            n += 1;
        }
    }
    n
}

/// Replays the fuzz corpus and the regression inputs through the same entry
/// point the fuzz target uses, on stable, in every test run.
#[test]
fn fuzz_corpus_replays_cleanly() {
    for seed in crate::fuzzing::seeds() {
        crate::fuzzing::decode_any(&seed);
    }
    assert!(
        replay("ipc_frame", crate::fuzzing::decode_any) > 0,
        "no corpus found under fuzz/"
    );
}

/// The maildrop-file target's corpus, the same way.
#[test]
fn maildrop_corpus_replays_cleanly() {
    assert!(
        replay("maildrop_file", crate::fuzzing::maildrop_file) > 0,
        "no maildrop_file corpus found under fuzz/"
    );
}

/// Every field of the key-service schema, pinned. A new field fails this
/// test, so whoever adds one must say here why it cannot carry a private
/// key to smtpd or smtp. Together with the broker-side test that scans
/// every encoded reply for the key's bytes
/// (`tls::keys::tests::replies_never_contain_the_private_key`), this is how
/// "no IPC field carries key material" is enforced.
#[test]
fn keys_schema_carries_no_key_material() {
    let schema = include_str!("../schema/keys.capnp");
    let fields: Vec<String> = schema
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| l.contains(" @") && l.contains(':') && !l.starts_with("const"))
        .map(|l| {
            l.trim_end_matches(';')
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let pinned = [
        // Request (to the broker: nothing here leaves it).
        "identity @0 :KeyRole",   // which key
        "key @1 :KeyRole",        // which key
        "scheme @2 :UInt16",      // a SignatureScheme number
        "message @3 :Data",       // the handshake bytes to sign
        "ticketEncrypt @4 :Data", // session state to seal
        "ticketDecrypt @5 :Data", // a ticket to open
        "dkimKeys @6 :Text",      // a From: address
        "name @7 :Text",          // a key's name
        "input @8 :Data",         // the DKIM signing input (headers) to sign
        // DkimKey (from the broker): what a DKIM-Signature field names.
        "name @0 :Text",               // the key table's name
        "domain @1 :Text",             // d=, published in DNS
        "selector @2 :Text",           // s=, published in DNS
        "algorithm @3 :DkimAlgorithm", // an enum
        // Identity (from the broker): public data only.
        "chain @0 :List(Data)", // certificates, parsed as X.509 by the receiver
        "schemes @1 :List(UInt16)", // numbers
        "algorithm @2 :UInt8",  // a number
        // Reply (from the broker).
        "identity @0 :Identity",
        "noKey @1 :Void",
        "signature @2 :Data", // <= MAX_SIGNATURE, a signature over `message`
        "ticket @3 :Data",    // sealed by the broker's ticket key, or opened state
        "refused @4 :Text",   // a reason
        "dkimKeys @5 :List(DkimKey)", // names, domains, selectors
        "tempfail @6 :Text",  // a reason
    ];
    assert_eq!(fields, pinned.map(String::from).to_vec());
    // The enum has exactly the two roles.
    assert!(schema.contains("server @0;") && schema.contains("client @1;"));
    // No field of any other edge is named for key material.
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schema")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "keys.capnp") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().map(|l| l.split('#').next().unwrap_or("")) {
            let Some((name, _)) = line.trim().split_once(" @") else {
                continue;
            };
            let name = name.to_lowercase();
            // (A SASL password from a client is not key material: it is
            // what the client sent, and auth.capnp carries it on purpose.)
            for word in ["key", "private", "pkcs", "pem", "cert"] {
                assert!(
                    !name.contains(word),
                    "{}: field {name} is named for key material",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn keys_messages_round_trip_and_limits_hold() {
    use crate::keys::{Identity, KeyRole, MAX_SIGNATURE, Reply as KReply, Request as KRequest};
    let reqs = [
        KRequest::Identity(KeyRole::Client),
        KRequest::Sign {
            key: KeyRole::Server,
            scheme: 0x0403,
            message: vec![7; 300],
        },
        KRequest::TicketEncrypt(vec![1; 200]),
        KRequest::TicketDecrypt(vec![2; 300]),
        KRequest::DkimKeys("alerts@example.org".into()),
        KRequest::DkimSign {
            name: "rsa".into(),
            input: vec![b'h'; crate::keys::MAX_DKIM_INPUT],
        },
    ];
    for r in reqs {
        assert_eq!(KRequest::decode(&r.encode(), vec![]).unwrap(), r);
    }
    let id = KReply::Identity(Identity {
        chain: vec![vec![0x30; 900], vec![0x31; 700]],
        schemes: vec![0x0403, 0x0804],
        algorithm: 3,
    });
    assert_eq!(KReply::decode(&id.encode(), vec![]).unwrap(), id);
    let dk = KReply::DkimKeys(vec![crate::keys::DkimKey {
        name: "ed".into(),
        domain: "example.org".into(),
        selector: "ed2026".into(),
        algorithm: crate::keys::DkimAlgorithm::Ed25519Sha256,
    }]);
    assert_eq!(KReply::decode(&dk.encode(), vec![]).unwrap(), dk);
    let t = KReply::Tempfail("dkim_signing_table lookup failure".into());
    assert_eq!(KReply::decode(&t.encode(), vec![]).unwrap(), t);
    // More keys than a message may be signed with, built by hand: refused.
    let mut b = frame::builder();
    b.init_root::<crate::generated::keys_capnp::reply::Builder>()
        .init_dkim_keys(crate::keys::MAX_DKIM_KEYS as u32 + 1);
    assert!(KReply::decode(&frame::finish(&b), vec![]).is_err());
    // A signing input over the cap, built by hand: refused.
    let mut b = frame::builder();
    b.init_root::<crate::generated::keys_capnp::request::Builder>()
        .init_dkim_sign()
        .set_input(&vec![0u8; crate::keys::MAX_DKIM_INPUT + 1]);
    assert!(KRequest::decode(&frame::finish(&b), vec![]).is_err());
    // A signature over the cap, or an empty chain, built by hand: refused.
    let mut b = frame::builder();
    b.init_root::<crate::generated::keys_capnp::reply::Builder>()
        .set_signature(&vec![0u8; MAX_SIGNATURE + 1]);
    assert!(matches!(
        KReply::decode(&frame::finish(&b), vec![]),
        Err(Violation::Field {
            field: "signature",
            ..
        })
    ));
    let mut b = frame::builder();
    {
        let r = b.init_root::<crate::generated::keys_capnp::reply::Builder>();
        let mut i = r.init_identity();
        i.reborrow().init_chain(0);
        i.init_schemes(1).set(0, 0x0403);
    }
    assert!(matches!(
        KReply::decode(&frame::finish(&b), vec![]),
        Err(Violation::Field {
            field: "identity.chain",
            ..
        })
    ));
}

/// The synchronous client rustls's signer uses: a round trip, a deadline
/// when the peer stalls, and Closed when it is gone.
#[test]
fn blocking_client_round_trip_deadline_and_close() {
    use crate::blocking::BlockingClient;
    use crate::keys::{Reply as KReply, Request as KRequest};
    let (a, b) = fdpass::seqpacket_pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        // Answer the first request, ignore the second, then hang up.
        let mut n = 0;
        loop {
            let mut pfd = [nix::poll::PollFd::new(
                b.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(5000u16)).unwrap();
            let r = fdpass::recv(b.as_fd(), &mut buf).unwrap();
            assert!(r.len > 0);
            KRequest::decode(&buf[..r.len], r.fds).unwrap();
            n += 1;
            if n == 1 {
                fdpass::send(b.as_fd(), &KReply::Signature(vec![9; 64]).encode(), &[]).unwrap();
            } else {
                std::thread::sleep(Duration::from_millis(600));
                return;
            }
        }
    });
    let mut c = BlockingClient::<KRequest, KReply>::new(a, Duration::from_millis(300));
    let req = KRequest::Identity(crate::keys::KeyRole::Server);
    assert_eq!(c.call(&req).unwrap(), KReply::Signature(vec![9; 64]));
    let t0 = Instant::now();
    assert!(matches!(c.call(&req), Err(ChannelError::Timeout(_))));
    assert!(t0.elapsed() < Duration::from_millis(550));
    server.join().unwrap();
    assert!(matches!(c.call(&req), Err(ChannelError::Closed)));
}

#[test]
fn cache_messages_round_trip_and_limits_hold() {
    use crate::cache::{MAX_KEY, MAX_TTL, MAX_VALUE, Op, Reply, Request};
    let reqs = [
        Request {
            namespace: "auth-failures".into(),
            key: "client:192.0.2.1".into(),
            op: Op::Get,
        },
        Request {
            namespace: "auth-failures".into(),
            key: "k".repeat(MAX_KEY),
            op: Op::Put {
                value: vec![7; MAX_VALUE],
                ttl_seconds: MAX_TTL,
            },
        },
        Request {
            namespace: "n".into(),
            key: String::new(),
            op: Op::Delete,
        },
    ];
    for r in reqs {
        assert_eq!(Request::decode(&r.encode(), vec![]).unwrap(), r);
    }
    for r in [
        Reply::Found {
            value: vec![1; MAX_VALUE],
            expires_in: 5,
        },
        Reply::NotFound,
        Reply::Done,
        Reply::Refused("smtpd may not write namespace auth-failures".into()),
    ] {
        assert_eq!(Reply::decode(&r.encode(), vec![]).unwrap(), r);
    }
    // A TTL of 0 or past the cap is a violation, not a record that never
    // expires.
    for ttl in [0, MAX_TTL + 1] {
        let f = Request {
            namespace: "n".into(),
            key: "k".into(),
            op: Op::Put {
                value: vec![],
                ttl_seconds: ttl,
            },
        }
        .encode();
        assert!(matches!(
            Request::decode(&f, vec![]),
            Err(Violation::Range { .. })
        ));
    }
}

#[test]
fn lookup_and_effects_messages_round_trip_and_limits_hold() {
    use crate::smtpd_broker as sb;
    use crate::smtpd_cleanup::{self as sc, Effects, MAX_EFFECTS, MAX_HEADER_LINE};
    let access = sb::Request::Access {
        map: "cidr:/etc/postfix/clients.cidr".into(),
        keys: (0..sb::MAX_ACCESS_KEYS).map(|i| format!("k{i}")).collect(),
    };
    assert_eq!(
        sb::Request::decode(&access.encode(), vec![]).unwrap(),
        access
    );
    for t in [
        sb::Table::VirtualAlias,
        sb::Table::VirtualAliasDomain,
        sb::Table::VirtualMailbox,
        sb::Table::VirtualMailboxDomain,
        sb::Table::Generic,
    ] {
        let q = sb::Request::Lookup(t, "u+x@virtual.example".into());
        assert_eq!(sb::Request::decode(&q.encode(), vec![]).unwrap(), q);
    }
    let hit = sb::Reply::Hit(3, "REJECT go away".into());
    assert_eq!(sb::Reply::decode(&hit.encode(), vec![]).unwrap(), hit);
    let e = sc::Request::Effects(Effects {
        hold: true,
        redirect: "spam@example.org".into(),
        bcc: (0..MAX_EFFECTS)
            .map(|i| format!("b{i}@example.org"))
            .collect(),
        prepend: vec![format!("X-Long: {}", "v".repeat(MAX_HEADER_LINE - 8))],
    });
    assert_eq!(sc::Request::decode(&e.encode(), vec![]).unwrap(), e);
    // A header line cannot smuggle a line break into the message.
    let bad = sc::Request::Effects(Effects {
        prepend: vec!["X-A: b\r\nX-Injected: c".into()],
        ..Effects::default()
    });
    assert!(matches!(
        sc::Request::decode(&bad.encode(), vec![]),
        Err(Violation::Field { .. })
    ));
}

#[test]
fn verify_and_probe_messages_round_trip_and_limits_hold() {
    use crate::{deliver, probe, verify};
    let q = verify::Request {
        address: "u".repeat(verify::MAX_ADDRESS),
    };
    assert_eq!(verify::Request::decode(&q.encode(), vec![]).unwrap(), q);
    for status in [
        verify::Status::Deliverable,
        verify::Status::Undeliverable,
        verify::Status::Deferred,
        verify::Status::InProgress,
    ] {
        let r = verify::Reply {
            status,
            text: "Address verification in progress".into(),
        };
        assert_eq!(verify::Reply::decode(&r.encode(), vec![]).unwrap(), r);
    }
    let p = probe::Request {
        address: "user@relay.example".into(),
        sender: String::new(),
    };
    assert_eq!(probe::Request::decode(&p.encode(), vec![]).unwrap(), p);
    let r = probe::Reply {
        status: probe::Status::Undeliverable,
        dsn: "5.1.1".into(),
        text: "host x[127.0.0.1] said: 550 5.1.1 no".into(),
    };
    assert_eq!(probe::Reply::decode(&r.encode(), vec![]).unwrap(), r);
    // A result's status code must be one.
    let bad = probe::Reply {
        dsn: "5.1.x".into(),
        ..r
    };
    assert!(matches!(
        probe::Reply::decode(&bad.encode(), vec![]),
        Err(Violation::Field { field: "dsn", .. })
    ));
    // A text with a line break cannot reach a log line.
    let f = verify::Reply {
        status: verify::Status::Deferred,
        text: "a\r\nb".into(),
    }
    .encode();
    assert!(verify::Reply::decode(&f, vec![]).is_err());
    // A probe is a delivery request without a descriptor; a descriptor
    // beside a probe, or none beside a delivery, is a violation.
    let req = deliver::Request {
        queue_id: "4AbC0123".into(),
        sender: String::new(),
        nexthop: "[127.0.0.1]:25".into(),
        recipients: vec![deliver::Recipient {
            index: 0,
            address: "u@x.example".into(),
            orcpt: String::new(),
            notify: 0,
        }],
        envid: String::new(),
        ret: 0,
        smtputf8: false,
        body_8bit: false,
        arrival_us: 1,
        active_us: 1,
        size: 0,
        file: None,
    };
    let f = req.encode();
    let back = deliver::Request::decode(&f, vec![]).unwrap();
    assert!(back.is_probe());
    assert_eq!(back.recipients, req.recipients);
    let fd: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    assert!(matches!(
        deliver::Request::decode(&f, vec![fd]),
        Err(Violation::FdCount { got: 1, want: 0 })
    ));
    let with_file = deliver::Request {
        file: Some(std::fs::File::open("/dev/null").unwrap().into()),
        ..req
    };
    assert!(matches!(
        deliver::Request::decode(&with_file.encode(), vec![]),
        Err(Violation::FdCount { got: 0, want: 1 })
    ));
}

#[test]
fn resolver_requests_round_trip_and_names_are_checked() {
    use crate::resolver::Request;
    for r in [
        Request::Mx("example.org".into()),
        Request::Addresses("mx.example.org".into()),
        Request::Ptr("192.0.2.1".into()),
        Request::A("2.0.0.127.zen.example".into()),
        Request::Txt("2.0.0.127.zen.example".into()),
        Request::Ns("example.org".into()),
    ] {
        assert_eq!(Request::decode(&r.encode(), vec![]).unwrap(), r);
    }
    for bad in [
        Request::Ns(String::new()),
        Request::Ns("a b".into()),
        Request::Ptr("not-an-ip".into()),
    ] {
        assert!(Request::decode(&bad.encode(), vec![]).is_err(), "{bad:?}");
    }
}

#[test]
fn metrics_reports_round_trip_and_limits_hold() {
    use crate::metrics::{self, Request, Sample};
    let full = Request {
        samples: (0..metrics::MAX_SAMPLES)
            .map(|i| Sample {
                name: "postern_rejects_total".into(),
                labels: vec!["rcpt".into(), format!("check_{i}")],
                value: i as f64,
            })
            .collect(),
    };
    let f = full.encode();
    assert!(f.len() <= <Request as Message>::MAX_FRAME, "{}", f.len());
    assert_eq!(Request::decode(&f, vec![]).unwrap(), full);
    let one = |name: &str, label: &str, value: f64| Request {
        samples: vec![Sample {
            name: name.into(),
            labels: vec![label.into()],
            value,
        }],
    };
    // Names are metric names; values are finite; labels have no line breaks.
    for bad in [
        one("Postern Rejects", "x", 1.0),
        one("", "x", 1.0),
        one("postern_x", "x", f64::NAN),
        one("postern_x", "x", f64::INFINITY),
        one("postern_x", "a\nb", 1.0),
    ] {
        assert!(
            matches!(
                Request::decode(&bad.encode(), vec![]),
                Err(Violation::Field { .. })
            ),
            "{bad:?}"
        );
    }
    let r = metrics::Reply { accepted: 7 };
    assert_eq!(metrics::Reply::decode(&r.encode(), vec![]).unwrap(), r);
}

#[test]
fn queue_explanations_round_trip_and_limits_hold() {
    use crate::admin_qmgr::{Explanation, Hop, MAX_HOPS, Reply, Request};
    let q = Request::Explain("user@example.test".into());
    assert_eq!(Request::decode(&q.encode(), vec![]).unwrap(), q);
    assert!(Request::decode(&Request::Explain("a b".into()).encode(), vec![]).is_err());
    let x = Reply::Explained(Box::new(Explanation {
        address: "postmaster@example.test".into(),
        transport: "smtp".into(),
        nexthop: "example.test".into(),
        hops: (0..MAX_HOPS)
            .map(|i| Hop {
                host: format!("mx{i}.example.test"),
                preference: i as u16,
                addresses: (0..MAX_HOPS).map(|j| format!("192.0.2.{j}")).collect(),
            })
            .collect(),
        tls_level: "may".into(),
        tls_why: "smtp_tls_security_level".into(),
        concurrency: 20,
        rate_delay_ms: 1000,
        recipient_limit: 50,
        in_flight: 2,
        waiting: 7,
        deferred: 3,
        next_retry: 1_800_000_000,
        ..Explanation::default()
    }));
    let f = x.encode();
    assert!(f.len() <= <Reply as Message>::MAX_FRAME);
    assert_eq!(Reply::decode(&f, vec![]).unwrap(), x);
}

#[test]
fn policy_messages_round_trip_and_limits_hold() {
    use crate::policy::{self, Reply, Request};
    let mut attrs: Vec<(String, String)> = (0..policy::MAX_ATTRS - 1)
        .map(|i| (format!("a_{i}"), "v".repeat(policy::MAX_VALUE)))
        .collect();
    attrs.push(("request".into(), "smtpd_access_policy".into()));
    let q = Request {
        service: format!(
            "{{ inet:127.0.0.1:9998, timeout=100000ms }}{}",
            "x".repeat(900)
        ),
        attrs,
    };
    assert_eq!(Request::decode(&q.encode(), vec![]).unwrap(), q);
    for r in [
        Reply::Action("x".repeat(policy::MAX_ACTION)),
        Reply::Action("550 5.7.1 no".into()),
        Reply::Failed("connect to 127.0.0.1:9998: Connection refused".into()),
    ] {
        assert_eq!(Reply::decode(&r.encode(), vec![]).unwrap(), r);
    }
    // A name the protocol cannot carry, or a value with a line break,
    // never reaches a policy server.
    for (name, value) in [
        ("bad=name", "v"),
        ("", "v"),
        ("Upper", "v"),
        ("ok", "a\nb=c"),
    ] {
        let q = Request {
            service: "s".into(),
            attrs: vec![(name.into(), value.into())],
        };
        assert!(
            matches!(
                Request::decode(&q.encode(), vec![]),
                Err(Violation::Field { .. })
            ),
            "{name:?}={value:?}"
        );
    }
    let q = Request {
        service: "s".into(),
        attrs: vec![("a".into(), "b".into()); policy::MAX_ATTRS + 1],
    };
    // The encoder clips to the limit; a decoder sees at most MAX_ATTRS.
    assert_eq!(
        Request::decode(&q.encode(), vec![]).unwrap().attrs.len(),
        policy::MAX_ATTRS
    );
}

#[test]
fn milter_messages_round_trip_and_limits_hold() {
    use crate::milter::{self, Open, Outcome, Reply, Request, Verdict};
    let open = Request::Open(Open {
        milter: "{ inet:127.0.0.1:8891, default_action=accept }".into(),
        macros: (0..milter::MAX_MACROS)
            .map(|i| (format!("{{m{i}}}"), "v".repeat(milter::MAX_MACRO_VALUE)))
            .collect(),
        host: "client.example".into(),
        addr: "192.0.2.1".into(),
        port: 25,
        helo: "client.example".into(),
        mail: vec!["<a@example.com>".into(), "SIZE=10".into()],
    });
    for m in [
        open,
        Request::Rcpt("<b@example.net>".into()),
        Request::Content(vec![b'x'; milter::MAX_CHUNK]),
        Request::End,
        Request::Helo("client.example".into()),
        Request::Mail(vec!["<a@example.com>".into(), "BODY=8BITMIME".into()]),
        Request::Macros(vec![("{auth_authen}".into(), "u".into())]),
        Request::Attach {
            ticket: u64::MAX,
            milter: "inet:127.0.0.1:8891".into(),
        },
        Request::Close,
    ] {
        assert_eq!(Request::decode(&m.encode(), Vec::new()).unwrap(), m);
    }
    for m in [
        Reply::Verdict(Verdict {
            outcome: Outcome::Reject,
            reply: vec!["550-5.7.1 one".into(), "550 5.7.1 two".into()],
            quarantine: String::new(),
            failure: String::new(),
            ticket: 7,
        }),
        Reply::Verdict(Verdict::of(Outcome::Shutdown)),
        Reply::Edit(vec![0; milter::MAX_EDIT]),
    ] {
        assert_eq!(Reply::decode(&m.encode(), Vec::new()).unwrap(), m);
    }
    // A reply line with a line break in it is refused.
    let bad = Reply::Verdict(Verdict {
        outcome: Outcome::Reject,
        reply: vec!["550 5.7.1 a\r\n250 b".into()],
        quarantine: String::new(),
        failure: String::new(),
        ticket: 0,
    });
    assert!(Reply::decode(&bad.encode(), Vec::new()).is_err());
    let mut b = crate::frame::builder();
    {
        let r = b.init_root::<crate::generated::milter_capnp::reply::Builder>();
        let mut v = r.init_verdict();
        v.set_outcome(9);
    }
    assert!(Reply::decode(&crate::frame::finish(&b), Vec::new()).is_err());
}

#[test]
fn postscreen_handoff_carries_one_socket_and_checks_addresses() {
    use crate::postscreen_smtpd::{Reply, Request};
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let q = Request {
        service: "smtpd".into(),
        client: "192.0.2.7:40000".parse().unwrap(),
        server: Some("[2001:db8::1]:25".parse().unwrap()),
        max_waiting: 100,
        socket: a.into(),
    };
    let f = q.encode();
    assert_eq!(q.fds().len(), 1);
    // Without its descriptor (or with two) the frame is a violation.
    assert!(matches!(
        Request::decode(&f, vec![]),
        Err(Violation::FdCount { got: 0, want: 1 })
    ));
    let (c, d) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(Request::decode(&f, vec![c.into(), d.into()]).is_err());
    let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
    let got = Request::decode(&f, vec![c.into()]).unwrap();
    assert_eq!(
        (got.service.as_str(), got.client, got.server),
        ("smtpd", q.client, q.server)
    );
    for r in [
        Reply::Taken(3),
        Reply::Refused("no such pass service".into()),
    ] {
        assert_eq!(Reply::decode(&r.encode(), vec![]).unwrap(), r);
    }
}
