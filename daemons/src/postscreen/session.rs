//! One client through postscreen, in Postfix's order: the PROXY header
//! (behind a load balancer), the access list, the cache, the tests before
//! the greeting (pregreet and DNS lists, at once), then either the hand-off
//! to smtpd or the engine after the greeting (the deep protocol tests).
//! Log lines have Postfix's shapes, so log tools and fail2ban read them.
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use postern_proto::screen::{self, Action, Engine, Outcome, Output, TESTS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Shared;
use super::memory::{self, Record};
use super::settings::{Acl, Settings};
use crate::{info, warn};

/// How long one reply may take to leave: a client that does not read is
/// not waited for.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A session's result so far, for the log and the cache.
struct Screen {
    id: String,
    ip: IpAddr,
    started: Instant,
    /// A test failed with action enforce: RCPT gets this reply.
    enforced: Option<String>,
    /// A test was failed with action ignore: no PASS NEW this time.
    excused: bool,
    record: Record,
}

/// Counts one verdict (postern_postscreen_verdicts_total).
fn verdict(v: &str) {
    crate::metrics::inc(&crate::metrics::catalog::SCREENED, &[v]);
}

fn elapsed(since: Instant) -> String {
    let e = since.elapsed();
    format!("{}.{:02}", e.as_secs(), e.subsec_millis() / 10)
}

/// Writes a reply. Boxed: a write's state (its deadline timer) is on the
/// heap only while it runs, so a session waiting elsewhere carries none.
fn send<'a>(
    stream: &'a mut TcpStream,
    text: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>> {
    Box::pin(async move {
        matches!(
            tokio::time::timeout(WRITE_DEADLINE, stream.write_all(text.as_bytes())).await,
            Ok(Ok(()))
        )
    })
}

/// Screens one client, from accept to hand-off or hang-up.
pub async fn run(
    sh: Rc<Shared>,
    set: Rc<Settings>,
    mut stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    let started = Instant::now();
    let (client, server) = match set.proxy {
        Some(t) => match Box::pin(super::proxy::read(&mut stream, t, peer, local)).await {
            Some(ends) => ends,
            None => return,
        },
        None => (peer, local),
    };
    let id = format!("[{}]:{}", client.ip(), client.port());
    match server {
        Some(s) => info!("CONNECT from {id} to [{}]:{}", s.ip(), s.port()),
        None => info!("CONNECT from {id}"),
    }
    let mut s = Screen {
        id,
        ip: client.ip(),
        started,
        enforced: None,
        excused: false,
        record: Record::default(),
    };
    // The stages a client passes through once are boxed: their state is
    // on the heap only while they run, and a client waiting in the tests
    // does not carry room for it (the session's own future stays small).
    match Box::pin(access(&sh, &set, client.ip())).await {
        Err(e) => {
            warn!("postscreen_access_list: {e}; refusing {} for now", s.id);
            send(&mut stream, "421 4.3.0 Server configuration error\r\n").await;
            return;
        }
        Ok(Some(true)) => {
            info!("ALLOWLISTED {}", s.id);
            verdict("allowlisted");
            return Box::pin(hand_off(&sh, &set, stream, client, server, &s.id)).await;
        }
        Ok(Some(false)) => {
            info!("DENYLISTED {}", s.id);
            verdict("denylisted");
            match set.denylist_action {
                Action::Drop => {
                    send(&mut stream, "521 5.3.2 Service currently unavailable\r\n").await;
                    return;
                }
                Action::Enforce => {
                    s.enforced = Some("550 5.3.2 Service currently unavailable\r\n".into());
                }
                Action::Ignore => {}
            }
        }
        Ok(None) => {}
    }
    // One client may hold only so many connections (allowlisted ones are
    // not counted).
    let _held = match sh
        .clients
        .hold(client.ip(), set.ipv6_prefix, set.connection_limit)
    {
        Some(h) => h,
        None => {
            info!(
                "NOQUEUE: reject: CONNECT from {}: too many connections",
                s.id
            );
            verdict("busy");
            let r = format!(
                "421 4.7.0 Error: too many connections from {}\r\n",
                client.ip()
            );
            send(&mut stream, &r).await;
            return;
        }
    };
    let now = memory::now();
    s.record = Box::pin(memory::get(&sh.memory, client.ip())).await;
    let todo_pregreet = s.record.pregreet <= now;
    let todo_dnsbl = !set.sites.is_empty() && s.record.dnsbl <= now;
    let todo_deep = TESTS
        .iter()
        .any(|t| set.deep_enabled(*t) && s.record.deep(*t) <= now);
    if s.enforced.is_none() && !todo_pregreet && !todo_dnsbl && !todo_deep {
        info!("PASS OLD {}", s.id);
        verdict("pass_old");
        return Box::pin(hand_off(&sh, &set, stream, client, server, &s.id)).await;
    }
    // Only so many clients in the tests at once.
    if sh.screening.get() >= set.pre_queue_limit {
        info!(
            "NOQUEUE: reject: CONNECT from {}: all screening ports busy",
            s.id
        );
        verdict("busy");
        send(&mut stream, "421 4.3.2 All screening ports are busy\r\n").await;
        return;
    }
    sh.screening.set(sh.screening.get() + 1);
    let _screening = Leave(&sh.screening);
    let Some(pregreeted) = early(&sh, &set, &mut stream, &mut s, todo_pregreet, todo_dnsbl).await
    else {
        return;
    };
    let deep_todo = TESTS
        .iter()
        .any(|t| set.deep_enabled(*t) && s.record.deep(*t) <= memory::now());
    if s.enforced.is_none() && !deep_todo {
        if !s.excused {
            info!("PASS NEW {}", s.id);
            verdict("pass_new");
        }
        memory::put(&sh.memory, s.ip, s.record, set.retention);
        return Box::pin(hand_off(&sh, &set, stream, client, server, &s.id)).await;
    }
    memory::put(&sh.memory, s.ip, s.record, set.retention);
    // Boxed: a client waiting out the greeting carries no room for the
    // engine's state.
    Box::pin(after_greeting(&sh, &set, stream, s, pregreeted)).await;
}

/// Decrements a count when dropped.
struct Leave<'a>(&'a std::cell::Cell<usize>);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// postscreen_access_list: Some(true) permit, Some(false) reject, None
/// neither (the first item that decides wins), Err: a table failed.
async fn access(sh: &Shared, set: &Settings, ip: IpAddr) -> Result<Option<bool>, String> {
    let ip = crate::access::normalize(ip);
    for item in &set.access {
        match item {
            Acl::PermitMynetworks => {
                if set.mynetworks.iter().any(|c| c.contains(ip)) {
                    return Ok(Some(true));
                }
            }
            Acl::Table(t) => {
                let t = t.as_ref().map_err(Clone::clone)?;
                let found = sh.tables.lookup(t, &ip.to_string()).await?;
                match found.as_deref().map(|v| {
                    v.split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase()
                }) {
                    None => {}
                    Some(v) if v == "permit" => return Ok(Some(true)),
                    Some(v) if v == "reject" => return Ok(Some(false)),
                    Some(v) if v == "dunno" => {}
                    Some(v) => {
                        return Err(format!(
                            "{}: unknown action \"{v}\" for {ip} (permit, reject or dunno)",
                            t.spec().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// The DNS list score of `ip`, the list to name in a refusal, and the
/// TTL of the answers. Lists that do not answer in time count 0.
async fn dnsbl(sh: Rc<Shared>, set: Rc<Settings>, ip: IpAddr) -> (i32, Option<String>, Duration) {
    let reversed = crate::restrict::dnsxl::reversed(&crate::access::normalize(ip));
    let mut domains: Vec<&str> = set.sites.iter().map(|s| s.domain.as_str()).collect();
    domains.dedup();
    domains.sort_unstable();
    domains.dedup();
    // Every list at once.
    let queries: Vec<_> = domains
        .iter()
        .map(|d| {
            let q = postern_ipc::resolver::Request::Dnsbl(format!("{reversed}.{d}"));
            let (sh, timeout) = (sh.clone(), set.dnsbl_timeout);
            tokio::task::spawn_local(async move {
                tokio::time::timeout(timeout, sh.resolver.call(&q)).await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(queries.len());
    for (d, q) in domains.iter().zip(queries) {
        match q.await {
            Ok(r) => answers.push((*d, r)),
            Err(e) => warn!("dnsbl lookup at {d}: {e}"),
        }
    }
    let mut listed: Vec<(&str, Vec<std::net::Ipv4Addr>)> = Vec::new();
    let mut ttl: Option<u32> = None;
    for (domain, r) in answers {
        match r {
            Ok(Ok(postern_ipc::resolver::Reply::Listed { addrs, ttl: t })) => {
                if t > 0 {
                    ttl = Some(ttl.map_or(t, |x| x.min(t)));
                }
                listed.push((domain, addrs));
            }
            Ok(Ok(postern_ipc::resolver::Reply::Tempfail(e))) | Ok(Err(e)) => {
                warn!("dnsbl lookup error for {ip} at {domain}: {e}");
            }
            Ok(Ok(_)) => {}
            Err(_) => warn!("dnsbl lookup for {ip} at {domain}: timeout"),
        }
    }
    // The sites in the order the admin wrote them: the first that counted
    // with a positive weight is the one a refusal names.
    let mut score = 0i32;
    let mut name = None;
    for site in &set.sites {
        let Some((_, addrs)) = listed.iter().find(|(d, _)| *d == site.domain) else {
            continue;
        };
        let counts = !addrs.is_empty()
            && site
                .filter
                .as_ref()
                .is_none_or(|f| addrs.iter().any(|a| f.matches(*a)));
        if counts {
            score += site.weight;
            if name.is_none() && site.weight > 0 {
                name = Some(site.domain.clone());
            }
        }
    }
    let ttl = Duration::from_secs(u64::from(ttl.unwrap_or(0)))
        .clamp(set.dnsbl_min_ttl, set.dnsbl_max_ttl);
    (score, name, ttl)
}

/// The tests before the greeting: the "220-" teaser, then a wait of
/// postscreen_greet_wait for a client that talks first, while the DNS
/// lists are asked. None: the session is over (dropped, or the client
/// hung up). Some(true): the client talked first.
async fn early(
    sh: &Rc<Shared>,
    set: &Rc<Settings>,
    stream: &mut TcpStream,
    s: &mut Screen,
    todo_pregreet: bool,
    todo_dnsbl: bool,
) -> Option<bool> {
    if todo_pregreet
        && !set.greet_banner.is_empty()
        && !send(stream, &format!("220-{}\r\n", set.greet_banner)).await
    {
        return None;
    }
    let deadline = tokio::time::Instant::from_std(s.started + set.greet_wait);
    let (dsh, dset, ip) = (sh.clone(), set.clone(), s.ip);
    // Boxed, and only when asked: the lists' state is on the heap while
    // they answer.
    let mut dns: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> = if todo_dnsbl {
        Box::pin(async move { Some(dnsbl(dsh, dset, ip).await) })
    } else {
        Box::pin(std::future::ready(None))
    };
    let mut dns_result: Option<(i32, Option<String>, Duration)> = None;
    let mut dns_done = !todo_dnsbl;
    let mut pregreet: Option<bool> = if todo_pregreet { None } else { Some(false) };
    let mut allowlisted = false;
    let wait = tokio::time::sleep_until(deadline);
    tokio::pin!(wait);
    loop {
        // Done early: DNS answered, and either the client already talked
        // or its score allowlists it.
        if dns_done && (pregreet.is_some_and(|p| p) || allowlisted || !todo_pregreet) {
            break;
        }
        tokio::select! {
            r = stream.readable(), if pregreet.is_none() => match r.and_then(|()| peek(stream)) {
                Ok(None) => continue,
                Ok(Some((0, _))) | Err(_) => {
                    info!("HANGUP after {} from {} in tests before SMTP handshake", elapsed(s.started), s.id);
                    verdict("hangup");
                    return None;
                }
                Ok(Some((n, shown))) => {
                    info!(
                        "PREGREET {n} after {} from {}: {shown}",
                        elapsed(s.started),
                        s.id,
                    );
                    verdict("pregreet");
                    pregreet = Some(true);
                    match set.greet_action {
                        Action::Drop => {
                            send(stream, "521 5.5.1 Protocol error\r\n").await;
                            return None;
                        }
                        Action::Enforce => s.enforced = Some(screen::PROTOCOL_ERROR.into()),
                        Action::Ignore => s.excused = true,
                    }
                }
            },
            r = &mut dns, if !dns_done => {
                dns_done = true;
                dns_result = r;
                if let Some((score, _, _)) = &dns_result {
                    allowlisted = s.enforced.is_none()
                        && pregreet != Some(true)
                        && *score < set.dnsbl_threshold
                        && set.dnsbl_allowlist_threshold < 0
                        && *score <= set.dnsbl_allowlist_threshold;
                }
            }
            _ = &mut wait => break,
        }
    }
    let now = memory::now();
    let talked = pregreet == Some(true);
    if todo_pregreet && !talked {
        s.record.pregreet = memory::until(now, set.greet_ttl);
    }
    if let Some((score, name, ttl)) = dns_result {
        if score < set.dnsbl_threshold {
            s.record.dnsbl = memory::until(now, ttl);
        } else {
            info!("DNSBL rank {score} for {}", s.id);
            verdict("dnsbl");
            let name = name.unwrap_or_else(|| "a DNS list".into());
            let reply = |code: &str| {
                format!(
                    "{code} 5.7.1 Service unavailable; client [{}] blocked using {name}\r\n",
                    s.ip
                )
            };
            match set.dnsbl_action {
                Action::Drop => {
                    send(stream, &reply("521")).await;
                    return None;
                }
                Action::Enforce => s.enforced = Some(reply("550")),
                Action::Ignore => s.excused = true,
            }
        }
        // A low enough score lets the client skip the other tests, for
        // as long as the DNS answer holds.
        if allowlisted {
            let until = memory::until(now, ttl);
            s.record.pregreet = s.record.pregreet.max(until);
            for t in TESTS {
                s.record.set_deep(t, s.record.deep(t).max(until));
            }
        }
    } else if todo_dnsbl {
        // The lists did not answer before the greeting was due: the
        // client is tested again next time.
        s.excused = true;
    }
    Some(talked)
}

/// The engine after the greeting. A client that passes is told 450 at
/// RCPT and comes back; it is never handed to smtpd in this session.
async fn after_greeting(
    sh: &Shared,
    set: &Settings,
    mut stream: TcpStream,
    mut s: Screen,
    pregreeted: bool,
) {
    // A client that talked first gets no greeting (Postfix: fewer
    // "NON-SMTP COMMAND" lines from it).
    if !pregreeted && !send(&mut stream, &format!("220 {}\r\n", set.smtpd_banner)).await {
        return;
    }
    let rcpt = s
        .enforced
        .clone()
        .unwrap_or_else(|| screen::TRY_AGAIN.into());
    let mut engine = Engine::new(s.id.clone(), rcpt);
    let mut deadline = tokio::time::Instant::now() + set.command_time_limit;
    let mut saved = false;
    'session: loop {
        let outputs = tokio::select! {
            r = stream.readable() => {
                // The buffer lives only here, not across a wait: a client
                // waiting in the tests costs no read buffer.
                let mut buf = [0u8; 512];
                match r.and_then(|()| stream.try_read(&mut buf)) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Ok(0) | Err(_) => {
                        info!("HANGUP after {} from {} in tests after SMTP handshake", elapsed(s.started), s.id);
                        verdict("hangup");
                        break 'session;
                    }
                    Ok(n) => engine.feed(&set.engine, &buf[..n]),
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                info!("COMMAND TIME LIMIT from {} after {}", s.id, engine.last_command());
                let r = format!("421 4.4.2 {} Error: timeout exceeded\r\n", set.engine.hostname);
                send(&mut stream, &r).await;
                break 'session;
            }
        };
        for o in outputs {
            match o {
                Output::Send(text) => {
                    deadline = tokio::time::Instant::now() + set.command_time_limit;
                    if !send(&mut stream, &text).await {
                        break 'session;
                    }
                }
                Output::Log(line) => {
                    for (prefix, v) in [
                        ("COMMAND PIPELINING ", "pipelining"),
                        ("NON-SMTP COMMAND ", "non_smtp"),
                        ("BARE NEWLINE ", "bare_newline"),
                    ] {
                        if line.starts_with(prefix) {
                            verdict(v);
                        }
                    }
                    info!("{line}");
                }
                Output::Passed => {
                    let failed = TESTS.iter().any(|t| engine.outcome(*t) == Outcome::Failed);
                    if s.enforced.is_none() && !failed {
                        record_deep(set, &engine, &mut s.record);
                        if !s.excused
                            && !TESTS.iter().any(|t| engine.outcome(*t) == Outcome::Excused)
                        {
                            info!("PASS NEW {}", s.id);
                            verdict("pass_new");
                        }
                        memory::put(&sh.memory, s.ip, s.record, set.retention);
                        saved = true;
                    }
                }
                Output::Close => break 'session,
            }
        }
    }
    if !saved {
        record_deep(set, &engine, &mut s.record);
        memory::put(&sh.memory, s.ip, s.record, set.retention);
    }
    info!("DISCONNECT {}", s.id);
}

/// The deep tests' results into the record: a pass holds for the test's
/// TTL, an excused failure for the shortest TTL, a failure clears it.
fn record_deep(set: &Settings, engine: &Engine, r: &mut Record) {
    let now = memory::now();
    for t in TESTS {
        match engine.outcome(t) {
            Outcome::Passed => r.set_deep(t, memory::until(now, set.deep_ttl(t))),
            Outcome::Excused => r.set_deep(t, memory::until(now, set.min_ttl())),
            Outcome::Failed => r.set_deep(t, 0),
            Outcome::Pending => {}
        }
    }
}

/// What a client sent before its turn, left in the socket (a peek, for
/// the log and, after a hand-off, for smtpd): its length and its first
/// bytes made printable. None: nothing after all (a spurious wake-up).
fn peek(stream: &TcpStream) -> std::io::Result<Option<(usize, String)>> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        let mut buf = [0u8; 1024];
        nix::sys::socket::recv(
            fd,
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .map(|n| (n, screen::escape(&buf[..n], 100)))
        .map_err(std::io::Error::from)
    });
    match r {
        Ok(x) => Ok(Some(x)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Hands the client's socket to smtpd, which greets it; on failure the
/// client is told to come back later.
async fn hand_off(
    sh: &Shared,
    set: &Settings,
    stream: TcpStream,
    client: SocketAddr,
    server: Option<SocketAddr>,
    id: &str,
) {
    let socket = match stream.into_std() {
        Ok(s) => std::os::fd::OwnedFd::from(s),
        Err(e) => {
            warn!("cannot hand {id} to smtpd: {e}");
            return;
        }
    };
    let req = postern_ipc::postscreen_smtpd::Request {
        service: set.pass_service.clone(),
        client,
        server,
        max_waiting: set.post_queue_limit,
        socket,
    };
    use postern_ipc::postscreen_smtpd::Reply;
    match sh.smtpd.call(&req).await {
        Ok(Reply::Taken(_)) => {
            verdict("handed");
            return;
        }
        Ok(Reply::Busy) => {}
        Ok(Reply::Refused(why)) | Err(why) => warn!("cannot hand {id} to smtpd: {why}"),
    }
    info!("NOQUEUE: reject: CONNECT from {id}: all server ports busy");
    verdict("busy");
    let mut s = std::net::TcpStream::from(req.socket);
    let _ = std::io::Write::write(&mut s, b"421 4.3.2 All server ports are busy\r\n");
}
