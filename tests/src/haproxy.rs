//! Debian's HAProxy as the load balancer in front of a listener, started
//! by a test (its service never runs).
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

pub struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy on `ip`: port 2526 sends version 1 headers to `backend`,
/// port 2527 version 2.
pub fn start(ip: &str, backend: &str, dir: &std::path::Path) -> Haproxy {
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind {ip}:2526\n  default_backend b1\n\
             backend b1\n  server s1 {backend} send-proxy\n\
             frontend v2\n  bind {ip}:2527\n  default_backend b2\n\
             backend b2\n  server s2 {backend} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install haproxy)");
    for port in [2526, 2527] {
        wait_for("haproxy listening", Duration::from_secs(20), || {
            std::net::TcpStream::connect((ip, port)).ok()
        });
    }
    Haproxy(child)
}
