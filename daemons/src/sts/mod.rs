//! sts: MTA-STS policies (RFC 8461) for the smtp client. It is the only
//! process that fetches them: its jail allows TCP connections to port 443
//! and nothing else; it resolves names through the resolver role and keeps
//! what it fetched in the state store (namespace `mta-sts`), so a restart
//! neither forgets a policy nor fetches every one again.
//!
//! For each domain smtp asks about, it looks the `_mta-sts` TXT record
//! up; when the record's id differs from the cached policy's, or the
//! cached policy expired, it fetches
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (the certificate
//! verified for that name against `smtp_mta_sts_ca_file`, else the system
//! CA bundle; at most 64 KiB, within FETCH_TIMEOUT, no redirects) and
//! parses it with `proto::mtasts`. A policy host that is down, slow or
//! serves garbage is an untrusted peer like any other: the fetch fails,
//! a still valid cached policy goes on applying (RFC 8461 §5.1), and
//! without one the domain has no policy. Nothing of a failed fetch is
//! kept. Each domain's policy is its own: one domain's broken policy
//! changes nothing for another domain, even on the same MX hosts.
//!
//! It also keeps the TLS-RPT counts the smtp client reports and sends the
//! daily reports (sts/report.rs).
mod report;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use postern_config::{Params, Role};
use postern_ipc::edge::Answer;
use postern_ipc::resolver::{Reply as Dns, Request as Ask};
use postern_ipc::sts::{self as st, Reply, Request};
use postern_proto::mtasts::{self, MAX_RESPONSE};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::{self, Context};
use crate::smtp::dest::Dns as _;
use crate::{info, warn};

/// How long one policy fetch may take, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Domains whose policies are held in memory (the state store has more).
const MEMORY: usize = 10_000;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Sts, ipc_fd, |params: &Params| {
        // The CAs are a file: read them before the jail. A CA file that
        // is named and cannot be read stops the role (every fetch would
        // fail); the system bundle missing leaves no CA, and every fetch
        // then fails, which means no policy, as without MTA-STS.
        let ca = params.str("smtp_mta_sts_ca_file");
        let level = if ca.is_empty() {
            crate::smtp::TlsLevel::May
        } else {
            crate::smtp::TlsLevel::Verify
        };
        let roots = crate::smtp::load_roots(ca, level)
            .map_err(|e| e.replace("smtp_tls_CAfile", "smtp_mta_sts_ca_file"))?;
        if roots.is_empty() {
            warn!(
                "no CA certificate to verify MTA-STS policy hosts with: no policy can be fetched"
            );
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(crate::tls::VERSIONS)
            .map_err(|e| format!("sts TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        Ok((move |ctx: Context| serve(ctx, tls), Vec::new()))
    })
}

/// A policy as held: the TXT id it was fetched for, and when it expires
/// (seconds since the epoch).
#[derive(Debug, Clone)]
struct Held {
    policy: mtasts::Policy,
    id: String,
    expires: u64,
}

struct Sts {
    tls: tokio_rustls::TlsConnector,
    dns: crate::smtp::ResolverClient,
    store: crate::cache::client::Client,
    memory: RefCell<HashMap<String, Held>>,
    /// Domains whose policy is being refreshed before it expires.
    refreshing: RefCell<std::collections::HashSet<String>>,
    reports: report::Reports,
}

/// How often the role looks for reports that are due.
const REPORT_CHECK: Duration = Duration::from_secs(10);

async fn serve(mut ctx: Context, tls: tokio_rustls::TlsConnector) {
    let query = ctx.query_timeout();
    let sts = Rc::new(Sts {
        tls,
        dns: crate::smtp::ResolverClient::new(ctx.switchboard.clone(), query),
        store: crate::cache::client::Client::new(ctx.switchboard.clone(), "mta-sts"),
        memory: RefCell::default(),
        refreshing: RefCell::default(),
        reports: report::Reports::new(report::Settings::new(&ctx.params), ctx.switchboard.clone()),
    });
    let reporter = {
        let sts = sts.clone();
        async move {
            loop {
                tokio::time::sleep(REPORT_CHECK).await;
                let post = |url: String, body: Vec<u8>| {
                    let sts = sts.clone();
                    async move { sts.post(&url, &body).await }
                };
                sts.reports.send_due(query, &sts.dns, post).await;
            }
        }
    };
    // A fetch may take FETCH_TIMEOUT on top of the DNS questions.
    let deadline = query + FETCH_TIMEOUT;
    let channels = daemon::serve_channels(&mut ctx, |from, fd| {
        channel(sts.clone(), from, fd, deadline)
    });
    tokio::select! {
        _ = channels => {}
        _ = reporter => {}
    }
}

async fn channel(sts: Rc<Sts>, from: Role, fd: OwnedFd, timeout: Duration) {
    crate::edges::serve::<st::Link, _, _>(Role::Sts, from, fd, timeout, |req| {
        let sts = sts.clone();
        async move { Answer::Reply(sts.answer(req).await) }
    })
    .await;
}

fn now() -> u64 {
    crate::clock::now_us() / 1_000_000
}

fn reply(h: &Held) -> Reply {
    Reply::Policy(st::Policy {
        mode: match h.policy.mode {
            mtasts::Mode::Enforce => st::Mode::Enforce,
            mtasts::Mode::Testing => st::Mode::Testing,
            mtasts::Mode::None => st::Mode::None,
        },
        mx: h.policy.mx.clone(),
        max_age: h.policy.max_age,
        id: h.id.clone(),
    })
}

/// The state store's record: the id on the first line, then the policy
/// as its file says it.
fn encode(h: &Held) -> Vec<u8> {
    format!("{}\n{}", h.id, h.policy.render()).into_bytes()
}

fn decode(v: &[u8], expires_in: u32) -> Option<Held> {
    let text = std::str::from_utf8(v).ok()?;
    let (id, policy) = text.split_once('\n')?;
    Some(Held {
        policy: mtasts::policy(policy.as_bytes()).ok()?,
        id: id.to_string(),
        expires: now() + u64::from(expires_in),
    })
}

impl Sts {
    async fn answer(self: &Rc<Self>, req: Request) -> Reply {
        let domain = match req {
            Request::Policy(d) => d,
            Request::Count(c) => {
                self.reports.count(c).await;
                return Reply::Counted;
            }
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let held = self.held(&domain).await;
        let record = match self.dns.query(Ask::Txt(format!("_mta-sts.{domain}"))).await {
            Dns::Texts(texts) => {
                let sts: Vec<&String> = texts.iter().filter(|t| t.starts_with("v=STSv1")).collect();
                match sts.as_slice() {
                    [one] => mtasts::sts_record(one).map_err(|e| format!("_mta-sts record: {e}")),
                    [] => Err(String::new()),
                    _ => Err("more than one _mta-sts record".into()),
                }
            }
            Dns::NotFound => Err(String::new()),
            Dns::Tempfail(e) => Err(format!("_mta-sts lookup failed: {e}")),
            other => Err(format!("unexpected resolver answer {other:?}")),
        };
        let record = match record {
            Ok(r) => r,
            // No (usable) record: a cached policy goes on applying until
            // it expires (RFC 8461 §5.1).
            Err(why) => {
                return match held {
                    Some(h) => reply(&h),
                    None => Reply::None(why),
                };
            }
        };
        if let Some(h) = &held
            && h.id == record.id
        {
            // Mail still goes there: past half its max_age, the policy is
            // fetched again in the background, so that it stays warm and
            // an attacker who blocks the fetch when it would expire finds
            // a fresh one (RFC 8461 §10.2); the cached policy answers now.
            if h.expires.saturating_sub(now()) < u64::from(h.policy.max_age) / 2 {
                self.refresh(&domain, &record.id);
            }
            return reply(h);
        }
        match self.fetch(&domain).await {
            Ok(policy) => reply(&self.adopt(&domain, record.id, policy, "").await),
            Err(e) => {
                warn!("{domain}: MTA-STS policy fetch failed: {e}");
                match held {
                    Some(h) => reply(&h),
                    None => Reply::None(format!("policy fetch failed: {e}")),
                }
            }
        }
    }

    /// A policy just fetched: logged (`how` it came) and kept for its
    /// max_age.
    async fn adopt(&self, domain: &str, id: String, policy: mtasts::Policy, how: &str) -> Held {
        info!(
            "{domain}: MTA-STS policy id {id}{how}: mode {}, max_age {}, mx {}",
            policy.mode.as_str(),
            policy.max_age,
            policy.mx.join(" ")
        );
        let h = Held {
            expires: now() + u64::from(policy.max_age),
            policy,
            id,
        };
        self.keep(domain, &h).await;
        h
    }

    /// Fetches `domain`'s policy (TXT id `id`) again, in the background,
    /// once at a time; a failure keeps the cached policy.
    fn refresh(self: &Rc<Self>, domain: &str, id: &str) {
        if !self.refreshing.borrow_mut().insert(domain.to_string()) {
            return;
        }
        let (sts, domain, id) = (self.clone(), domain.to_string(), id.to_string());
        tokio::task::spawn_local(async move {
            match sts.fetch(&domain).await {
                Ok(policy) => {
                    sts.adopt(&domain, id, policy, " refreshed before it expires")
                        .await;
                }
                Err(e) => {
                    warn!("{domain}: MTA-STS policy refresh failed (the cached policy stays): {e}")
                }
            }
            sts.refreshing.borrow_mut().remove(&domain);
        });
    }

    /// The unexpired policy held for `domain`: in memory, else in the
    /// state store.
    async fn held(&self, domain: &str) -> Option<Held> {
        let t = now();
        let mem = self.memory.borrow().get(domain).cloned();
        if let Some(h) = mem {
            if h.expires > t {
                return Some(h);
            }
            self.memory.borrow_mut().remove(domain);
            return None;
        }
        let (v, expires_in) = self.store.get(domain).await?;
        let h = decode(&v, expires_in)?;
        self.remember(domain, &h);
        Some(h)
    }

    fn remember(&self, domain: &str, h: &Held) {
        let mut m = self.memory.borrow_mut();
        if m.len() >= MEMORY && !m.contains_key(domain) {
            let t = now();
            m.retain(|_, h| h.expires > t);
            if m.len() >= MEMORY
                && let Some(k) = m.keys().next().cloned()
            {
                m.remove(&k);
            }
        }
        m.insert(domain.to_string(), h.clone());
    }

    async fn keep(&self, domain: &str, h: &Held) {
        self.remember(domain, h);
        self.store
            .put(
                domain,
                encode(h),
                Duration::from_secs(u64::from(h.policy.max_age)),
            )
            .await;
    }

    /// One fetch of `domain`'s policy, within FETCH_TIMEOUT.
    async fn fetch(&self, domain: &str) -> Result<mtasts::Policy, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_inner(domain))
            .await
            .map_err(|_| format!("no policy within {}s", FETCH_TIMEOUT.as_secs()))?
    }

    async fn fetch_inner(&self, domain: &str) -> Result<mtasts::Policy, String> {
        let host = format!("mta-sts.{domain}");
        let addrs = match self.dns.query(Ask::Addresses(host.clone())).await {
            Dns::Addresses(a) => a,
            Dns::Tempfail(e) => return Err(format!("{host}: address lookup failed: {e}")),
            _ => return Err(format!("{host}: no address")),
        };
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let mut last = format!("{host}: no address");
        for ip in addrs.into_iter().take(4) {
            let addr = std::net::SocketAddr::new(ip, 443);
            let tcp = match tokio::net::TcpStream::connect(addr).await {
                Ok(t) => t,
                Err(e) => {
                    last = format!("{host}[{ip}]:443: {e}");
                    continue;
                }
            };
            let mut s = self
                .tls
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("{host}[{ip}]:443: TLS: {e}"))?;
            s.write_all(&mtasts::policy_request(domain))
                .await
                .map_err(|e| format!("{host}[{ip}]:443: {e}"))?;
            let mut resp = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if resp.len() + n > MAX_RESPONSE {
                            return Err(format!("{host}: response over {MAX_RESPONSE} bytes"));
                        }
                        resp.extend_from_slice(&buf[..n]);
                    }
                    // A server that closes without close_notify: what came
                    // is the response (a Content-Length still has to hold).
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(format!("{host}[{ip}]:443: {e}")),
                }
            }
            return mtasts::policy_response(&resp).map_err(|e| format!("{host}: {e}"));
        }
        Err(last)
    }

    /// POSTs a TLS-RPT report (gzipped JSON) to an https: address, port
    /// 443 only (the role's jail allows no other), within FETCH_TIMEOUT.
    async fn post(&self, url: &str, body: &[u8]) -> Result<(), String> {
        let rest = url.strip_prefix("https://").ok_or("not https")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host = match authority.split_once(':') {
            Some((h, "443")) => h,
            Some(_) => return Err("only port 443 is reachable from the sts role".into()),
            None => authority,
        };
        let head = format!(
            "POST {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: Postern\r\n\
             Content-Type: application/tlsrpt+gzip\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        let go = async {
            let resp = self.exchange(host, head.into_bytes(), body).await?;
            let status = resp
                .split(|b| *b == b'\n')
                .next()
                .and_then(|l| std::str::from_utf8(l).ok())
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or("no HTTP status")?;
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP {status}"))
            }
        };
        tokio::time::timeout(FETCH_TIMEOUT, go)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    /// One HTTPS exchange with `host`:443: `head` and `body` out, the
    /// response (up to MAX_RESPONSE bytes) back.
    async fn exchange(&self, host: &str, head: Vec<u8>, body: &[u8]) -> Result<Vec<u8>, String> {
        let ip = match self.dns.query(Ask::Addresses(host.to_string())).await {
            Dns::Addresses(a) => a.into_iter().next().ok_or("no address")?,
            _ => return Err(format!("{host}: no address")),
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect((ip, 443))
            .await
            .map_err(|e| format!("{host}[{ip}]:443: {e}"))?;
        let mut s = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{host}[{ip}]:443: TLS: {e}"))?;
        s.write_all(&head).await.map_err(|e| e.to_string())?;
        s.write_all(body).await.map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) if resp.len() + n > MAX_RESPONSE => return Err("response too large".into()),
                Ok(n) => resp.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(resp)
    }
}
