//! A table server for tests: speaks tcp_table(5) or the socketmap netstring
//! protocol on a loopback port, answering from a fixed map. Keys it treats
//! specially: `temp...` gets a temporary error, `die...` a connection
//! closed half-way through the reply, `slow...` no answer at all.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Socketmap,
}

pub struct TableServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub lookups: Arc<AtomicUsize>,
}

impl TableServer {
    pub fn start(ip: &str, proto: Protocol, map: &[(&str, &str)]) -> TableServer {
        let l = TcpListener::bind((ip, 0)).expect("bind the table server");
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let map: Arc<HashMap<String, String>> = Arc::new(
            map.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let lookups = Arc::new(AtomicUsize::new(0));
        let (stop2, lookups2) = (stop.clone(), lookups.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (map, lookups) = (map.clone(), lookups2.clone());
                        std::thread::spawn(move || serve_tcp(s, proto, &map, &lookups));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        TableServer {
            port,
            stop,
            lookups,
        }
    }
}

impl TableServer {
    /// The same server on a Unix socket at `path` (`port` is 0).
    pub fn start_unix(
        path: &std::path::Path,
        proto: Protocol,
        map: &[(&str, &str)],
    ) -> TableServer {
        let l = std::os::unix::net::UnixListener::bind(path).expect("bind the table socket");
        l.set_nonblocking(true).unwrap();
        let map: Arc<HashMap<String, String>> = Arc::new(
            map.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let lookups = Arc::new(AtomicUsize::new(0));
        let (stop2, lookups2) = (stop.clone(), lookups.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (map, lookups) = (map.clone(), lookups2.clone());
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                            let w = s.try_clone().unwrap();
                            serve(s, w, proto, &map, &lookups)
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        TableServer {
            port: 0,
            stop,
            lookups,
        }
    }
}

impl Drop for TableServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(map: &HashMap<String, String>, key: &str) -> Option<Result<Option<String>, String>> {
    if key.starts_with("die") {
        return None;
    }
    if key.starts_with("temp") {
        return Some(Err("database down".into()));
    }
    Some(Ok(map.get(key).cloned()))
}

fn serve_tcp(s: TcpStream, proto: Protocol, map: &HashMap<String, String>, lookups: &AtomicUsize) {
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let w = s.try_clone().unwrap();
    serve(s, w, proto, map, lookups);
}

fn serve(
    s: impl Read,
    mut w: impl Write,
    proto: Protocol,
    map: &HashMap<String, String>,
    lookups: &AtomicUsize,
) {
    let mut r = BufReader::new(s);
    loop {
        let key = match proto {
            Protocol::Tcp => {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let Some(k) = line.trim_end().strip_prefix("get ") else {
                    return;
                };
                unquote(k)
            }
            Protocol::Socketmap => {
                let mut len = Vec::new();
                if r.read_until(b':', &mut len).unwrap_or(0) == 0 {
                    return;
                }
                let n: usize = match String::from_utf8_lossy(&len[..len.len() - 1]).parse() {
                    Ok(n) => n,
                    Err(_) => return,
                };
                let mut body = vec![0u8; n + 1];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let text = String::from_utf8_lossy(&body[..n]).into_owned();
                match text.split_once(' ') {
                    Some((_, k)) => k.to_string(),
                    None => return,
                }
            }
        };
        lookups.fetch_add(1, Ordering::Relaxed);
        if key.starts_with("slow") {
            std::thread::sleep(std::time::Duration::from_secs(60));
            return;
        }
        let reply = match (proto, answer(map, &key)) {
            (Protocol::Tcp, None) => b"200 half-way thro".to_vec(),
            (Protocol::Socketmap, None) => b"30:OK half-way thro".to_vec(),
            (Protocol::Tcp, Some(Ok(Some(v)))) => format!("200 {}\n", quote(&v)).into_bytes(),
            (Protocol::Tcp, Some(Ok(None))) => b"500 not found\n".to_vec(),
            (Protocol::Tcp, Some(Err(e))) => format!("400 {}\n", quote(&e)).into_bytes(),
            (Protocol::Socketmap, Some(r)) => {
                let body = match r {
                    Ok(Some(v)) => format!("OK {v}"),
                    Ok(None) => "NOTFOUND ".into(),
                    Err(e) => format!("TEMP {e}"),
                };
                format!("{}:{body},", body.len()).into_bytes()
            }
        };
        if w.write_all(&reply).is_err() || reply.ends_with(b"thro") {
            return;
        }
    }
}

fn quote(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b == b'%' || !b.is_ascii_graphic() {
                format!("%{b:02X}")
            } else {
                (b as char).to_string()
            }
        })
        .collect()
}

fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
