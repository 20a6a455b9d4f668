//! A fast next hop for volume tests: a small threaded SMTP server that
//! keeps no files, only a count of each numbered message it accepted, so
//! that tens of thousands of deliveries can be checked for loss and
//! duplication. It speaks plain ESMTP (no PIPELINING, no TLS) over real
//! sockets; "down" means nothing listens on its port (connection refused).
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Shared {
    /// Message number -> times accepted.
    seen: Mutex<HashMap<usize, u32>>,
    /// Messages whose body was not exactly what the test sent.
    damaged: AtomicU64,
    total: AtomicU64,
    stop: AtomicBool,
    /// Open sessions, shut down when the sink stops (a client caching its
    /// connections must see the next hop go down too).
    open: Mutex<Vec<TcpStream>>,
}

pub struct CountSink {
    pub addr: String,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// A message of about `size` bytes that [`CountSink`] recognizes by `tag`
/// and number, and checks byte for byte.
pub fn sized_message(tag: &str, n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "Subject: {tag} {n}\r\nDate: Tue, 24 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{tag}-{n}@load.example>\r\nX-Test-Id: {tag}-{n}\r\n\r\n"
    );
    let mut k = 0;
    while m.len() < size {
        m.push_str(&format!(
            "{tag}-{n} line {k} {}\r\n",
            "abcdefghij".repeat(3)
        ));
        k += 1;
    }
    m.into_bytes()
}

impl CountSink {
    /// Starts listening on `ip:port`, checking messages made by
    /// [`sized_message`] with `tag` and `size`.
    pub fn start(ip: &str, port: u16, tag: &str, size: usize) -> CountSink {
        let l = TcpListener::bind((ip, port)).expect("bind the count sink");
        l.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        let (s, tag) = (shared.clone(), tag.to_string());
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        if let Ok(dup) = c.try_clone() {
                            s.open.lock().unwrap().push(dup);
                        }
                        let (s, tag) = (s.clone(), tag.clone());
                        std::thread::spawn(move || {
                            let _ = session(c, &s, &tag, size);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountSink {
            addr: format!("{ip}:{port}"),
            shared,
            accept: Some(accept),
        }
    }

    /// Messages accepted, counting duplicates.
    pub fn total(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    pub fn damaged(&self) -> u64 {
        self.shared.damaged.load(Ordering::Relaxed)
    }

    /// Message number -> times accepted.
    pub fn seen(&self) -> HashMap<usize, u32> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Stops listening and drops every open session: the next hop is down.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for CountSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn session(c: TcpStream, s: &Shared, tag: &str, size: usize) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut w = c;
    w.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => w.write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SIZE 0\r\n")?,
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => w.write_all(b"250 2.0.0 Ok\r\n")?,
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut body = Vec::with_capacity(size + 512);
                let mut l = Vec::new();
                loop {
                    l.clear();
                    if r.read_until(b'\n', &mut l)? == 0 {
                        return Ok(());
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    let unstuffed = if l.starts_with(b"..") {
                        &l[1..]
                    } else {
                        &l[..]
                    };
                    body.extend_from_slice(unstuffed);
                }
                record(s, tag, size, &body);
                w.write_all(b"250 2.0.0 Ok: queued\r\n")?;
            }
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"502 5.5.2 Error: command not recognized\r\n")?,
        }
    }
}

fn record(s: &Shared, tag: &str, size: usize, body: &[u8]) {
    s.total.fetch_add(1, Ordering::Relaxed);
    let text = String::from_utf8_lossy(body);
    let n = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Test-Id: "))
        .and_then(|id| id.trim().strip_prefix(&format!("{tag}-")))
        .and_then(|n| n.parse::<usize>().ok());
    match n {
        Some(n) if body.ends_with(&sized_message(tag, n, size)) => {
            *s.seen.lock().unwrap().entry(n).or_default() += 1;
        }
        _ => {
            s.damaged.fetch_add(1, Ordering::Relaxed);
        }
    }
}
