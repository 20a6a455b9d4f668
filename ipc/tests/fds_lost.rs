//! A receiver that runs out of descriptor slots loses the descriptors
//! beside a frame, and only those: the error says so, it is not a protocol
//! violation, and the channel stays in step for the next frame. Its own
//! test binary: it lowers this process's descriptor limit.
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use postern_ipc::{Channel, ChannelError};
use postern_sandbox::fdpass::seqpacket_pair;

#[tokio::test(flavor = "current_thread")]
async fn lost_descriptors_are_a_local_shortage_not_a_violation() {
    let (a, b) = seqpacket_pair().unwrap();
    let tx = Channel::new(a, 64, Duration::from_secs(5)).unwrap();
    let mut rx = Channel::new(b, 64, Duration::from_secs(5)).unwrap();
    let files: Vec<OwnedFd> = (0..4)
        .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
        .collect();
    let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();

    // Fill every free slot below the highest open descriptor, then allow
    // exactly one more.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .max()
        .unwrap();
    let mut fillers = Vec::new();
    let last = loop {
        let f = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let n = std::os::fd::AsRawFd::as_raw_fd(&f);
        fillers.push(f);
        if n >= highest {
            break n;
        }
    };
    setrlimit(Resource::RLIMIT_NOFILE, last as u64 + 2, hard).unwrap();
    tx.send(b"first", &borrowed).await.unwrap();
    let r = rx.recv().await;
    let shown = format!("{:?}", r.as_ref().map(|(f, fds)| (f.to_vec(), fds.len())));
    let lost = matches!(r, Err(ChannelError::FdsLost));
    let is_violation = r.as_ref().err().is_some_and(|e| e.is_violation());
    drop(r);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    assert!(lost, "expected FdsLost, got {shown}");
    assert!(!is_violation);

    // The next frame arrives whole, with its descriptors.
    tx.send(b"second", &borrowed[..2]).await.unwrap();
    let (f, fds) = rx.recv().await.unwrap();
    assert_eq!(f, b"second");
    assert_eq!(fds.len(), 2);
}
