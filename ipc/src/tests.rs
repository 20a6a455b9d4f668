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
        "resolver"
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
        FromDaemon::ConnectionOpened,
        FromDaemon::ConnectionClosed,
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

/// Replays the fuzz corpus and the regression inputs through the same entry
/// point the fuzz target uses, on stable, in every test run.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for seed in crate::fuzzing::seeds() {
        crate::fuzzing::decode_any(&seed);
    }
    for dir in ["corpus/ipc_frame", "regressions/ipc_frame"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            crate::fuzzing::decode_any(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no corpus found under fuzz/");
}
