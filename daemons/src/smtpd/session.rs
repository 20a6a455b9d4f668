//! One SMTP session: the I/O shell around the sans-IO session core
//! (`postern_proto::smtp::server`). The core decides every reply and log
//! line; this shell reads lines and content with deadlines, carries out
//! the core's actions (cleanup, the broker, the auth role, TLS), and feeds
//! back what happened.
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use postern_config::{Params, sasl};
use postern_ipc::smtpd_cleanup::{self as sc, Begin, Client, Recipient};
use postern_proto::smtp::Reply;
use postern_proto::smtp::server::{
    Action, Answer, AuthOutcome, Config, Envelope, Event, Peer, Server, TlsPeer, TlsPolicy, Want,
};

use super::Shared;
use super::checks::{self, Chains};
use super::conn::{Conn, ConnError, Line};
use super::pool::CleanupEp;
use crate::access::Access;
use crate::log;
use crate::metrics::catalog::{RECEIVED, REJECTS, SASL};

/// A listener's settings (main.cf with the service's -o overrides).
pub struct Settings {
    pub log_name: String,
    pub timeout: Duration,
    pub per_request_deadline: bool,
    pub min_data_rate: u64,
    pub pipelining_limit: usize,
    pub bare_lf_reject: bool,
    pub starttls_timeout: Duration,
    /// smtpd_peername_lookup: look the client's name up at connect.
    pub peername_lookup: bool,
    /// smtpd_tls_ask_ccert, and how its fingerprints are made.
    pub ask_ccert: bool,
    pub fingerprint_digest: crate::tls::ccert::Digest,
    pub access: Access,
    pub chains: Chains,
    pub core: Arc<Config>,
    /// local_header_rewrite_clients.
    pub header_clients: HeaderClients,
    /// smtpd_client_ipv6_prefix_length: how anvil groups IPv6 clients.
    pub ipv6_prefix: u8,
    /// smtpd_client_new_tls_session_rate_limit (0: none).
    pub tls_rate_limit: u32,
    /// smtpd_tls_protocols, smtpd_tls_ciphers, smtpd_tls_exclude_ciphers,
    /// or their mandatory twins where TLS is required (encrypt, or wrapper
    /// mode), as Postfix's smtpd chooses.
    pub tls_choice: postern_config::tlsproto::Choice,
    /// smtpd_upstream_proxy_protocol = haproxy: the PROXY header's
    /// deadline (smtpd_upstream_proxy_timeout).
    pub upstream_proxy: Option<Duration>,
}

/// local_header_rewrite_clients: the clients whose message headers get
/// the local rewriting (canonical, masquerade, `@$myorigin`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderClients {
    /// permit_inet_interfaces: a client on this machine (a loopback
    /// address, or the address it connected to).
    pub inet_interfaces: bool,
    pub mynetworks: bool,
    pub sasl: bool,
    /// static:all
    pub all: bool,
}

impl HeaderClients {
    pub fn new(p: &Params) -> Result<HeaderClients, String> {
        let mut h = HeaderClients::default();
        for item in p
            .list("local_header_rewrite_clients")
            .map_err(|e| e.to_string())?
        {
            match item.as_str() {
                "permit_inet_interfaces" => h.inet_interfaces = true,
                "permit_mynetworks" => h.mynetworks = true,
                "permit_sasl_authenticated" => h.sasl = true,
                "static:all" => h.all = true,
                other => {
                    return Err(format!(
                        "local_header_rewrite_clients: {other} is not supported by Postern"
                    ));
                }
            }
        }
        Ok(h)
    }
}

/// What smtpd's TLS may negotiate: the protocol, grade and exclusion
/// settings for opportunistic or for mandatory TLS.
fn tls_choice(p: &Params, mandatory: bool) -> Result<postern_config::tlsproto::Choice, String> {
    let (protocols, grade) = if mandatory {
        (
            "smtpd_tls_mandatory_protocols",
            "smtpd_tls_mandatory_ciphers",
        )
    } else {
        ("smtpd_tls_protocols", "smtpd_tls_ciphers")
    };
    let mut excludes = vec![p.str("smtpd_tls_exclude_ciphers")];
    if mandatory {
        excludes.push(p.str("smtpd_tls_mandatory_exclude_ciphers"));
    }
    postern_config::tlsproto::Choice::new(p.str(protocols), p.str(grade), &excludes).map_err(|e| {
        format!(
            "{protocols}, smtpd_tls_exclude_ciphers{}: {e}",
            if mandatory {
                ", smtpd_tls_mandatory_exclude_ciphers"
            } else {
                ""
            }
        )
    })
}

impl Settings {
    pub fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let access = Access::new(p)?;
        let chains = Chains::new(p)?;
        let core = Config {
            myhostname: p.str("myhostname").into(),
            banner: p.str("smtpd_banner").into(),
            hard_error_limit: p.int("smtpd_hard_error_limit").map_err(e)? as u32,
            soft_error_limit: p.int("smtpd_soft_error_limit").map_err(e)? as u32,
            error_sleep: p.duration("smtpd_error_sleep_time").map_err(e)?,
            junk_limit: p.int("smtpd_junk_command_limit").map_err(e)? as u32,
            recipient_limit: p.int("smtpd_recipient_limit").map_err(e)? as usize,
            message_size_limit: p.size("message_size_limit").map_err(e)?,
            line_length_limit: p.int("line_length_limit").map_err(e)? as usize,
            disable_vrfy: p.bool("disable_vrfy_command").map_err(e)?,
            helo_required: p.bool("smtpd_helo_required").map_err(e)?,
            tls: match p.str("smtpd_tls_security_level") {
                "none" => TlsPolicy::None,
                "encrypt" => TlsPolicy::Encrypt,
                _ => TlsPolicy::May,
            },
            wrapper: p.bool("smtpd_tls_wrappermode").map_err(e)?,
            sasl_enable: p.bool("smtpd_sasl_auth_enable").map_err(e)?,
            tls_auth_only: p.bool("smtpd_tls_auth_only").map_err(e)?,
            auth_without_tls: sasl::plaintext_allowed(p.str("smtpd_sasl_security_options"))?,
            auth_with_tls: sasl::plaintext_allowed(p.str("smtpd_sasl_tls_security_options"))?,
            chunking: true,
            requiretls: p.bool("requiretls_enable").map_err(e)?,
            content_chunk: sc::MAX_CHUNK,
            checks: chains.stages(),
            soft_bounce: p.bool("soft_bounce").map_err(e)?,
            strict_rfc821: p.bool("strict_rfc821_envelopes").map_err(e)?,
        };
        let mandatory = core.wrapper || core.tls == TlsPolicy::Encrypt;
        let tls_choice = tls_choice(p, mandatory)?;
        Ok(Settings {
            tls_choice,
            log_name: p.str("syslog_name").into(),
            timeout: p.duration("smtpd_timeout").map_err(e)?,
            per_request_deadline: p.bool("smtpd_per_request_deadline").map_err(e)?,
            min_data_rate: p.int("smtpd_min_data_rate").map_err(e)? as u64,
            pipelining_limit: p.int("smtpd_pipelining_limit").map_err(e)? as usize,
            bare_lf_reject: p.str("smtpd_forbid_bare_newline") == "reject",
            starttls_timeout: p.duration("smtpd_starttls_timeout").map_err(e)?,
            peername_lookup: p.bool("smtpd_peername_lookup").map_err(e)?,
            ask_ccert: p.bool("smtpd_tls_ask_ccert").map_err(e)?,
            fingerprint_digest: crate::tls::ccert::Digest::from_name(
                p.str("smtpd_tls_fingerprint_digest"),
            )
            .ok_or_else(|| {
                format!(
                    "smtpd_tls_fingerprint_digest = {}: Postern computes sha256 or sha1 fingerprints",
                    p.str("smtpd_tls_fingerprint_digest")
                )
            })?,
            access,
            chains,
            core: Arc::new(core),
            header_clients: HeaderClients::new(p)?,
            ipv6_prefix: p.int("smtpd_client_ipv6_prefix_length").map_err(e)? as u8,
            tls_rate_limit: p
                .int("smtpd_client_new_tls_session_rate_limit")
                .map_err(e)? as u32,
            upstream_proxy: match p.str("smtpd_upstream_proxy_protocol") {
                "haproxy" => Some(p.duration("smtpd_upstream_proxy_timeout").map_err(e)?),
                _ => None,
            },
        })
    }
}

pub struct Session {
    sh: Rc<Shared>,
    set: Rc<Settings>,
    conn: Conn,
    core: Server,
    /// The transaction's channel to cleanup, while the core has one open.
    ep: Option<CleanupEp>,
    port: u16,
    scope: Rc<str>,
    /// defer_if_permit between stages (smtpd_delay_reject = no).
    memo: std::cell::RefCell<crate::restrict::Memo>,
    /// The client sent commands ahead without PIPELINING (for
    /// reject_unauth_pipelining); it stays set for the session.
    pipelined: bool,
    /// Access-table actions for the open transaction, not yet sent to
    /// cleanup.
    effects: sc::Effects,
    names: checks::ClientNames,
    /// The client connects from an address of this machine (a loopback
    /// address, or the one it connected to): permit_inet_interfaces.
    pub own_address: bool,
    /// The client's certificate, once TLS is up (smtpd_tls_ask_ccert).
    ccert: Option<crate::tls::ccert::Ccert>,
    /// The connection as policy requests describe it.
    info: checks::ConnInfo,
    /// The channel to the policy role, from the session's first policy
    /// request to its end.
    policy: super::pool::PolicyLease,
    /// The channel to the milter role (smtpd_milters), from connect.
    milter: super::pool::MilterLease,
}

fn transport(e: ConnError) -> Event {
    match e {
        ConnError::Timeout => Event::Timeout,
        ConnError::Closed | ConnError::Io => Event::Closed,
    }
}

impl Session {
    /// `scope`: the listener's service name (its TLS setup and ticket scope).
    /// `client`: the client's address and port; `server`: the address
    /// it connected to (both from a PROXY header behind a load balancer).
    pub async fn new(
        sh: Rc<Shared>,
        set: Rc<Settings>,
        conn: Conn,
        client: std::net::SocketAddr,
        server: Option<std::net::SocketAddr>,
        scope: Rc<str>,
    ) -> Session {
        let port = client.port();
        let ip = crate::access::normalize(client.ip());
        let names = if set.peername_lookup {
            let log_name = set.log_name.clone();
            let log = move |t: &str| log::line_as(Some(&log_name), t);
            checks::ClientNames::lookup(&sh, ip, &log).await
        } else {
            checks::ClientNames::unknown(crate::restrict::NameStatus::Perm)
        };
        let bare_lf_ok =
            !set.bare_lf_reject || set.access.bare_lf_exclusions.iter().any(|c| c.contains(ip));
        let peer = Peer {
            name: names.name.clone(),
            addr: ip,
            port,
        };
        let core = Server::start(set.core.clone(), peer, bare_lf_ok, sh.tls_ready());
        // The clients of smtpd_client_event_limit_exceptions are not
        // counted at all, as in Postfix.
        let exempt = set.access.limit_exceptions.iter().any(|c| c.contains(ip));
        let info = checks::ConnInfo {
            anvil: (!exempt).then(|| super::anvil::Key::new(scope.clone(), ip, set.ipv6_prefix)),
            service: scope.clone(),
            conn_count: 0,
            conn_rate: 0,
            server,
            client_port: port,
            serial: sh.next_serial(),
            tls: None,
        };
        Session {
            sh,
            set,
            conn,
            core,
            ep: None,
            port,
            scope,
            memo: Default::default(),
            pipelined: false,
            effects: sc::Effects::default(),
            names,
            own_address: ip.is_loopback(),
            ccert: None,
            info,
            policy: Default::default(),
            milter: Default::default(),
        }
    }

    fn log(&self, text: &str) {
        log::line_as(Some(&self.set.log_name), text);
    }

    pub async fn run(mut self) {
        if let Some(k) = &self.info.anvil {
            (self.info.conn_count, self.info.conn_rate) = self.sh.anvil_connect(k);
        }
        self.serve().await;
        if let Some(k) = &self.info.anvil {
            self.sh.anvil_disconnect(k);
        }
        // The policy channel (and the policy role's connections for it)
        // serves the next session.
        self.sh.release_policy(&self.policy);
        self.sh.release_milter(&self.milter).await;
    }

    async fn serve(&mut self) {
        let mut in_content = false;
        loop {
            while let Some(a) = self.core.poll() {
                if self.exec(a).await {
                    return;
                }
            }
            match self.core.wants() {
                Want::Line { limit, bare_lf_ok } => {
                    in_content = false;
                    self.conn.begin_request(false);
                    let line = self.conn.read_line(limit, bare_lf_ok).await;
                    self.core.set_tls_available(self.sh.tls_ready());
                    match line {
                        Ok(Line::Command(bytes)) => {
                            if !self.pipelined && !self.conn.buffered().is_empty() {
                                self.pipelined = ill_pipelining(&bytes, self.core.esmtp());
                            }
                            self.core.line(&bytes)
                        }
                        Ok(Line::TooLong) => self.core.event(Event::LineTooLong),
                        Ok(Line::BareLf) => self.core.event(Event::LineBareLf),
                        Err(e) => self.core.event(transport(e)),
                    }
                }
                want @ (Want::Data | Want::Chunk { .. }) => {
                    if !in_content {
                        in_content = true;
                        self.conn.begin_request(true);
                    }
                    if self.conn.buffered().is_empty()
                        && let Err(e) = self.conn.fill().await
                    {
                        self.core.event(transport(e));
                        continue;
                    }
                    let buf = self.conn.buffered();
                    let take = match want {
                        Want::Chunk { remaining } => buf
                            .len()
                            .min(usize::try_from(remaining).unwrap_or(usize::MAX)),
                        _ => buf.len(),
                    };
                    let n = self.core.content(&buf[..take]);
                    self.conn.consume(n);
                }
                // Every asking action is answered in exec(): waiting here
                // would be a bug in the shell. End the session, never hang.
                Want::Answer | Want::Tls => {
                    self.log("warning: smtpd: session core waits for an answer nobody gives");
                    self.core.event(Event::Closed);
                }
                Want::Done => return,
            }
        }
    }

    /// Carries out one action; true when the session is over.
    async fn exec(&mut self, a: Action) -> bool {
        match a {
            Action::Reply(text) => {
                self.conn.queue(&text);
                if (!self.conn.has_line() || self.conn.pending_replies >= self.set.pipelining_limit)
                    && let Err(e) = self.conn.flush().await
                {
                    self.core.event(transport(e));
                }
            }
            Action::Flush => {
                if let Err(e) = self.conn.flush().await {
                    self.core.event(transport(e));
                }
            }
            Action::Pause(d) => {
                if let Err(e) = self.conn.flush().await {
                    self.core.event(transport(e));
                } else {
                    tokio::time::sleep(d).await;
                }
            }
            Action::Log(text) => self.log(&text),
            Action::Decide(_) => {
                let log_name = self.set.log_name.clone();
                let log = move |t: &str| log::line_as(Some(&log_name), t);
                let env = checks::Env {
                    sh: &self.sh,
                    access: &self.set.access,
                    log: &log,
                    memo: &self.memo,
                    pipelined: self.pipelined,
                    names: &self.names,
                    ccert: self.ccert.as_ref(),
                    policy: &self.policy,
                    milter: &self.milter,
                    conn: &self.info,
                };
                let facts = self.core.facts();
                let facts_stage = facts.stage;
                if facts.stage == Some(postern_proto::smtp::server::Stage::Mail) {
                    // A new transaction: nothing carries over.
                    self.effects = sc::Effects::default();
                }
                let d = checks::decide(&self.set.chains, &env, facts).await;
                for (what, text) in &d.notes {
                    self.core.note(what, text);
                }
                let v = d
                    .verdict
                    .unwrap_or(postern_proto::smtp::server::Verdict::Accept);
                if matches!(v, postern_proto::smtp::server::Verdict::Reject { .. }) {
                    if let Some(stage) = facts_stage {
                        crate::metrics::inc(&REJECTS, &[stage_label(stage), d.check]);
                    }
                } else {
                    merge(&mut self.effects, d.effects);
                }
                self.core.answer(Answer::Verdict(v));
            }
            Action::Begin(env) => {
                let a = self.begin(env).await;
                self.core.answer(a);
            }
            Action::Recipients(list) => {
                let a = self.send_recipients(list).await;
                self.core.answer(a);
            }
            Action::Content(data) => {
                let ok = match self.ep.as_mut() {
                    Some(ep) => ep.send(&sc::Request::Content(data)).await.is_ok(),
                    None => false,
                };
                if !ok {
                    self.ep = None;
                    self.core.event(Event::SinkLost);
                }
            }
            Action::Commit => {
                let a = self.commit().await;
                self.core.answer(a);
            }
            Action::Abort => {
                self.effects = sc::Effects::default();
                if let Some(ep) = self.ep.take() {
                    self.sh.abort(ep).await;
                }
            }
            Action::Authenticate {
                user,
                password,
                method,
            } => {
                let req = postern_ipc::auth::Request {
                    username: user,
                    password,
                    client: self.core.facts().peer.addr.to_string(),
                };
                let outcome = match self.sh.authenticate(req).await {
                    Ok(postern_ipc::auth::Reply::Ok(login)) => AuthOutcome::Ok(login),
                    Ok(postern_ipc::auth::Reply::Failed) => AuthOutcome::Failed,
                    Ok(postern_ipc::auth::Reply::Locked(secs)) => {
                        AuthOutcome::Locked(u64::from(secs))
                    }
                    Ok(postern_ipc::auth::Reply::Tempfail(e)) | Err(e) => AuthOutcome::Tempfail(e),
                };
                let result = match &outcome {
                    AuthOutcome::Ok(_) => "success",
                    AuthOutcome::Failed | AuthOutcome::Locked(_) => "failure",
                    AuthOutcome::Tempfail(_) => "tempfail",
                };
                crate::metrics::inc(&SASL, &[result, method]);
                self.core.answer(Answer::Auth(outcome));
            }
            Action::StartTls => {
                let e = match self.sh.tls(&self.scope) {
                    None => {
                        Event::TlsFailed("TLS is not available (no key from the broker)".into())
                    }
                    Some(acceptor) => {
                        match self
                            .conn
                            .start_tls(&acceptor, self.set.starttls_timeout)
                            .await
                        {
                            Ok(discarded) => {
                                self.ccert = self
                                    .sh
                                    .ask(&self.scope)
                                    .and_then(|a| a.inspect(self.conn.stream.peer_certificates()));
                                let peer = match &self.ccert {
                                    None => TlsPeer::Anonymous,
                                    Some(c) if c.trusted => TlsPeer::Trusted,
                                    Some(_) => TlsPeer::Untrusted,
                                };
                                self.conn.stream.count_tls("inbound");
                                self.info.tls = self.conn.stream.tls_info();
                                Event::TlsEstablished {
                                    summary: match (
                                        self.conn.stream.tls_summary(),
                                        self.conn.signature.take(),
                                    ) {
                                        (Some(t), Some(w)) => format!("{t} {w}"),
                                        (t, _) => t.unwrap_or_default(),
                                    },
                                    discarded,
                                    peer,
                                }
                            }
                            Err(e) => Event::TlsFailed(e),
                        }
                    }
                };
                let established = matches!(e, Event::TlsEstablished { .. });
                self.core.event(e);
                if established && let Some(refusal) = self.new_tls_session() {
                    self.core.event(refusal);
                }
            }
            Action::Close => {
                let _ = self.conn.flush().await;
                if let Some(ep) = self.ep.take() {
                    self.sh.abort(ep).await;
                }
                return true;
            }
        }
        false
    }

    /// Counts a new (not resumed) TLS session for anvil; past
    /// smtpd_client_new_tls_session_rate_limit, the session ends with
    /// Postfix's 421.
    fn new_tls_session(&mut self) -> Option<Event> {
        let limit = self.set.tls_rate_limit;
        let key = self.info.anvil.as_ref()?;
        if limit == 0 || self.info.tls.as_ref().is_none_or(|t| t.resumed) {
            return None;
        }
        let n = self.sh.anvil_event(key, super::anvil::Event::NewTls);
        if n <= limit {
            return None;
        }
        let client = self.core.facts().client.to_string();
        self.log(&format!(
            "warning: New TLS session rate limit exceeded: {n} from {client} for service {}",
            self.info.service
        ));
        Some(Event::Refuse(Reply::new(
            421,
            "4.7.0",
            &format!(
                "{} Error: too many new TLS sessions from {client}",
                self.set.core.myhostname
            ),
        )))
    }

    /// Whether local_header_rewrite_clients names this client.
    fn local_headers(&self, ip: IpAddr, authenticated: bool) -> bool {
        let h = &self.set.header_clients;
        h.all
            || (h.inet_interfaces && self.own_address)
            || (h.mynetworks && self.set.access.in_mynetworks(ip))
            || (h.sasl && authenticated)
    }

    async fn begin(&mut self, env: Envelope) -> Answer {
        let f = self.core.facts();
        let begin = Begin {
            client: Client {
                name: f.peer.name.clone(),
                addr: f.peer.addr.to_string(),
                port: self.port,
                helo: env.helo,
                proto: env.proto,
                log_name: self.set.log_name.clone(),
                tls: env.tls,
                local_uid: None,
            },
            sender: env.sender.address(),
            ret: env.params.ret,
            envid: env.params.envid,
            smtputf8: env.params.smtputf8,
            body_8bit: env.params.body_8bit,
            trace: false,
            remote_headers: !self.local_headers(f.peer.addr, f.login.is_some()),
            milter_ticket: self.milter.ticket.get(),
            signable: f.login.is_some() || self.set.access.in_mynetworks(f.peer.addr),
            requiretls: env.params.requiretls,
        };
        match self.sh.begin(begin).await {
            Ok((queue_id, ep)) => {
                self.ep = Some(ep);
                Answer::Begun { queue_id }
            }
            Err(f) => Answer::Failed(Reply::new(f.code, &f.enhanced, &f.text)),
        }
    }

    /// Sends the accepted recipients to cleanup, in batches.
    async fn send_recipients(
        &mut self,
        list: Vec<postern_proto::smtp::server::Recipient>,
    ) -> Answer {
        let Some(ep) = self.ep.as_mut() else {
            return Answer::TimedOut;
        };
        // The access-table actions so far go first: PREPEND must reach
        // cleanup before the headers do.
        if !self.effects.is_empty() {
            let e = std::mem::take(&mut self.effects);
            if ep.send(&sc::Request::Effects(e)).await.is_err() {
                self.ep = None;
                return Answer::TimedOut;
            }
        }
        let list: Vec<Recipient> = list
            .into_iter()
            .map(|r| Recipient {
                address: r.address,
                orcpt: r.orcpt,
                notify: r.notify,
            })
            .collect();
        for batch in list.chunks(sc::MAX_BATCH) {
            if ep
                .send(&sc::Request::Recipients(batch.to_vec()))
                .await
                .is_err()
            {
                self.ep = None;
                return Answer::TimedOut;
            }
        }
        Answer::Sent
    }

    /// The hang-up check, then the commit.
    async fn commit(&mut self) -> Answer {
        let Some(mut ep) = self.ep.take() else {
            return Answer::TimedOut;
        };
        // A client that has already gone would never see our 250: do not
        // deliver what it will send again.
        if self.conn.peer_hung_up() {
            let _ = ep.call(&sc::Request::Abort).await;
            self.sh.release(ep);
            return Answer::PeerGone;
        }
        // Actions decided at the end of data (HOLD, REDIRECT, BCC).
        if !self.effects.is_empty() {
            let e = std::mem::take(&mut self.effects);
            if ep.send(&sc::Request::Effects(e)).await.is_err() {
                return Answer::TimedOut;
            }
        }
        match ep.call(&sc::Request::End).await {
            Ok(sc::Reply::Committed) => {
                self.sh.release(ep);
                let source = if self.core.facts().login.is_some() {
                    "submission"
                } else {
                    "smtp"
                };
                crate::metrics::inc(&RECEIVED, &[&self.scope, source]);
                Answer::Committed
            }
            Ok(sc::Reply::Failed(f)) => {
                self.sh.release(ep);
                Answer::Failed(Reply::new(f.code, &f.enhanced, &f.text))
            }
            _ => Answer::TimedOut,
        }
    }
}

/// Postfix's SMTPD_FLAG_ILL_PIPELINING: more input waits behind this
/// command, and either the client never saw PIPELINING (no EHLO yet) or
/// the command is one after which a client must wait for the reply.
fn ill_pipelining(cmd: &[u8], esmtp: bool) -> bool {
    let verb: Vec<u8> = cmd
        .iter()
        .take_while(|b| **b != b' ')
        .map(u8::to_ascii_uppercase)
        .collect();
    !esmtp
        || matches!(
            verb.as_slice(),
            b"EHLO" | b"HELO" | b"DATA" | b"STARTTLS" | b"AUTH" | b"QUIT" | b"VRFY"
        )
}

/// Adds one decision's access-table actions to the transaction's.
pub(crate) fn merge(into: &mut sc::Effects, e: crate::restrict::Effects) {
    into.hold |= e.hold.is_some();
    if let Some(r) = e.redirect {
        into.redirect = r;
    }
    for b in e.bcc {
        if !into.bcc.contains(&b) && into.bcc.len() < sc::MAX_EFFECTS {
            into.bcc.push(b);
        }
    }
    for h in e.prepend {
        if !into.prepend.contains(&h) && into.prepend.len() < sc::MAX_EFFECTS {
            into.prepend.push(h);
        }
    }
}

/// A stage as the reject counters label it.
fn stage_label(s: postern_proto::smtp::server::Stage) -> &'static str {
    use postern_proto::smtp::server::Stage;
    match s {
        Stage::Connect => "connect",
        Stage::Helo => "helo",
        Stage::Mail => "mail",
        Stage::Rcpt => "rcpt",
        Stage::Data => "data",
        Stage::EndOfData => "end-of-data",
        Stage::Vrfy => "vrfy",
        Stage::Auth => "auth",
        Stage::StartTls => "starttls",
    }
}
