//! The checks behind the session core's decision points: one chain per
//! SMTP stage, asked in order; the first check that does not accept
//! decides. The restriction lists (`restrict`) sit on the stages where
//! Postfix evaluates them: all at RCPT with smtpd_delay_reject (the
//! default), else client at connect, HELO at HELO, sender at MAIL; then
//! DATA and end of data. Policy services and Milters plug in here as new
//! [`Check`]s.
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use postern_proto::smtp::Reply;
use postern_proto::smtp::server::{Facts, Stage, Stages, Verdict};

use super::anvil::Event;
use super::pool::Shared;
use crate::access::Access;
use crate::restrict::{self, Lookups, Memo, Outcome, Policy};

/// One check of a chain.
#[derive(Debug, Clone)]
pub enum Check {
    /// smtpd_client_connection_count_limit and _rate_limit, at connect.
    Connections {
        count: u32,
        rate: u32,
        myhostname: String,
    },
    /// smtpd_client_{message,recipient,auth}_rate_limit: counts the event
    /// and refuses past the limit.
    ClientRate { event: Event, limit: u32 },
    /// smtpd_client_new_tls_session_rate_limit, at STARTTLS: refused when
    /// the client is already past it (the handshake itself is counted
    /// after it completes).
    TlsRate { limit: u32 },
    /// smtpd_account_message_rate_limit: messages per SASL account.
    AccountRate { limit: usize, unit: Duration },
    /// The smtpd_*_restrictions lists of this stage.
    Restrictions,
    /// VRFY: unknown local users are refused.
    LocalRecipient,
    /// smtpd_milters: the event goes to the session's Milters.
    Milter { myhostname: String },
}

/// The chains of one listener.
#[derive(Debug)]
pub struct Chains {
    chains: Vec<(Stage, Vec<Check>)>,
    pub policy: Policy,
}

impl Chains {
    pub fn new(p: &postern_config::Params) -> Result<Chains, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let mut policy = Policy::new(p)?;
        policy.resolve_services(p)?;
        let mut c = Chains {
            chains: Vec::new(),
            policy,
        };
        // anvil's limits come first at each stage, as in Postfix.
        let limit = |n: &str| -> Result<u32, String> { Ok(p.int(n).map_err(e)? as u32) };
        let (count, crate_) = (
            limit("smtpd_client_connection_count_limit")?,
            limit("smtpd_client_connection_rate_limit")?,
        );
        if count > 0 || crate_ > 0 {
            c.add(
                Stage::Connect,
                Check::Connections {
                    count,
                    rate: crate_,
                    myhostname: p.str("myhostname").into(),
                },
            );
        }
        for (stage, event, name) in [
            (Stage::Mail, Event::Mail, "smtpd_client_message_rate_limit"),
            (
                Stage::Rcpt,
                Event::Rcpt,
                "smtpd_client_recipient_rate_limit",
            ),
            (Stage::Auth, Event::Auth, "smtpd_client_auth_rate_limit"),
        ] {
            let l = limit(name)?;
            if l > 0 {
                c.add(stage, Check::ClientRate { event, limit: l });
            }
        }
        let tls = limit("smtpd_client_new_tls_session_rate_limit")?;
        if tls > 0 {
            c.add(Stage::StartTls, Check::TlsRate { limit: tls });
        }
        let rate = p.int("smtpd_account_message_rate_limit").map_err(e)? as usize;
        if rate > 0 && p.bool("smtpd_sasl_auth_enable").map_err(e)? {
            c.add(
                Stage::Mail,
                Check::AccountRate {
                    limit: rate,
                    unit: p.duration("anvil_rate_time_unit").map_err(e)?,
                },
            );
        }
        let pol = &c.policy;
        let mut stages = Vec::new();
        if !pol.delay_reject {
            if !pol.client.is_empty() {
                stages.push(Stage::Connect);
            }
            if !pol.helo.is_empty() {
                stages.push(Stage::Helo);
            }
            if !pol.sender.is_empty() || pol.reject_unlisted_sender {
                stages.push(Stage::Mail);
            }
        }
        if pol.decides_rcpt() || pol.reject_unlisted_sender {
            stages.push(Stage::Rcpt);
        }
        if !pol.data.is_empty() {
            stages.push(Stage::Data);
        }
        if !pol.end_of_data.is_empty() {
            stages.push(Stage::EndOfData);
        }
        for s in stages {
            c.add(s, Check::Restrictions);
        }
        c.add(Stage::Vrfy, Check::LocalRecipient);
        // Milters hear each event once the restrictions let it pass.
        if !p.list("smtpd_milters").map_err(e)?.is_empty() {
            for s in [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt] {
                c.add(
                    s,
                    Check::Milter {
                        myhostname: p.str("myhostname").into(),
                    },
                );
            }
        }
        Ok(c)
    }

    fn add(&mut self, stage: Stage, check: Check) {
        match self.chains.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, l)) => l.push(check),
            None => self.chains.push((stage, vec![check])),
        }
    }

    /// The stages that have checks: the core asks only those.
    pub fn stages(&self) -> Stages {
        self.chains
            .iter()
            .fold(Stages::default(), |s, (st, _)| s.with(*st))
    }

    fn of(&self, stage: Stage) -> &[Check] {
        self.chains
            .iter()
            .find(|(s, _)| *s == stage)
            .map_or(&[], |(_, l)| l.as_slice())
    }
}

/// What the listener's checks need besides the chains.
pub struct Env<'a> {
    pub sh: &'a Shared,
    pub access: &'a Access,
    pub log: &'a dyn Fn(&str),
    /// The session's defer_if_permit between stages.
    pub memo: &'a RefCell<Memo>,
    /// The client sent commands ahead without PIPELINING.
    pub pipelined: bool,
    /// The client's names as looked up at connect.
    pub names: &'a ClientNames,
    /// The client's TLS certificate, if it sent one.
    pub ccert: Option<&'a crate::tls::ccert::Ccert>,
    /// The session's channel to the policy role.
    pub policy: &'a super::pool::PolicyLease,
    /// The session's channel to the milter role.
    pub milter: &'a super::pool::MilterLease,
    /// What a policy request tells of the connection.
    pub conn: &'a ConnInfo,
}

/// The connection as policy requests and the anvil limits see it.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The listener's service name (`for service smtp`).
    pub service: Rc<str>,
    /// The client as anvil counts it; None for the clients of
    /// smtpd_client_event_limit_exceptions.
    pub anvil: Option<super::anvil::Key>,
    /// Open sessions and connection rate at connect, this one included.
    pub conn_count: u32,
    pub conn_rate: u32,
    /// The address and port the client connected to.
    pub server: Option<std::net::SocketAddr>,
    pub client_port: u16,
    /// This process's number for the session.
    pub serial: u64,
    pub tls: Option<crate::tls::stream::TlsInfo>,
}

/// What the connect-time lookup learned of the client.
#[derive(Debug, Clone)]
pub struct ClientNames {
    /// Forward-confirmed, else "unknown" (the name in log lines).
    pub name: String,
    pub status: restrict::NameStatus,
    /// The PTR name, confirmed or not.
    pub reverse: String,
    pub reverse_status: restrict::NameStatus,
}

impl ClientNames {
    pub fn unknown(status: restrict::NameStatus) -> ClientNames {
        ClientNames {
            name: "unknown".into(),
            status,
            reverse: "unknown".into(),
            reverse_status: status,
        }
    }

    /// Postfix's peer lookup: the PTR name, kept as the client name only
    /// when one of its addresses is the client's.
    pub async fn lookup(sh: &Shared, ip: std::net::IpAddr, log: &dyn Fn(&str)) -> ClientNames {
        use postern_ipc::resolver::{Reply as R, Request as Q};
        use restrict::NameStatus::{Ok as Good, Perm, Temp};
        let ptr = match sh.dns(Q::Ptr(ip.to_string())).await {
            Ok(R::Names(n)) if !n.is_empty() => n[0].to_ascii_lowercase(),
            Ok(R::NotFound) | Ok(R::Names(_)) => return ClientNames::unknown(Perm),
            Ok(R::Tempfail(_)) | Err(_) => return ClientNames::unknown(Temp),
            Ok(other) => {
                log(&format!(
                    "warning: unexpected resolver answer {other:?} for {ip}"
                ));
                return ClientNames::unknown(Temp);
            }
        };
        if !restrict::eval::valid_hostname(&ptr) {
            log(&format!(
                "warning: {ip}: hostname {ptr} is not a valid host name"
            ));
            return ClientNames::unknown(Perm);
        }
        let confirmed = match sh.dns(Q::Addresses(ptr.clone())).await {
            Ok(R::Addresses(ips)) if ips.contains(&ip) => Good,
            Ok(R::Addresses(_)) | Ok(R::NotFound) | Ok(R::NullMx) => {
                log(&format!(
                    "warning: hostname {ptr} does not resolve to address {ip}"
                ));
                Perm
            }
            Ok(other) => {
                let why = match other {
                    R::Tempfail(e) => e,
                    o => format!("{o:?}"),
                };
                log(&format!(
                    "warning: {ip}: hostname {ptr} verification failed: {why}"
                ));
                Temp
            }
            Err(e) => {
                log(&format!(
                    "warning: {ip}: hostname {ptr} verification failed: {e}"
                ));
                Temp
            }
        };
        ClientNames {
            name: if confirmed == Good {
                ptr.clone()
            } else {
                "unknown".into()
            },
            status: confirmed,
            reverse: ptr,
            reverse_status: Good,
        }
    }
}

/// What a decision asks the session to do besides the verdict.
#[derive(Debug, Default)]
pub struct Decision {
    pub verdict: Option<Verdict>,
    /// `(what, text)` log lines (warn, info, reject_warning, hold, ...).
    pub notes: Vec<(&'static str, String)>,
    pub effects: restrict::Effects,
    /// What refused, when something did (the reject counters' label).
    pub check: &'static str,
}

fn r(code: u16, enh: &str, text: &str) -> Reply {
    Reply::new(code, enh, text)
}

/// The tables behind the restrictions, through the broker; policy
/// services through the policy role.
struct Broker<'a>(&'a Shared, &'a super::pool::PolicyLease);

impl Lookups for Broker<'_> {
    async fn policy(
        &self,
        svc: &postern_config::policy::Resolved,
        attrs: Vec<(&'static str, String)>,
    ) -> Result<String, String> {
        use postern_ipc::policy::{Reply, Request};
        let req = Request {
            service: svc.key(),
            attrs: attrs.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        };
        // Every attempt the policy role may make, and a margin.
        let budget = (svc.timeout * 2 + svc.retry_delay) * svc.try_limit + Duration::from_secs(5);
        match self.0.policy(self.1, &req, budget).await {
            Ok(Reply::Action(a)) => Ok(a),
            // The policy role logged the problem.
            Ok(Reply::Failed(e)) => Err(e),
            Err(e) => {
                crate::warn!("problem talking to server {}: {e}", svc.endpoint);
                Err(e)
            }
        }
    }

    async fn access(
        &self,
        map: &str,
        keys: Vec<String>,
    ) -> Result<Option<(usize, String)>, String> {
        self.0.access(map, keys).await
    }

    async fn sender_owners(&self, sender: &str) -> Result<Option<Vec<String>>, String> {
        self.0.sender_logins(sender).await
    }

    async fn dns(&self, q: restrict::DnsQuery) -> restrict::Dns {
        use postern_ipc::resolver::{Reply as R, Request as Q};
        use restrict::{Dns, DnsQuery};
        let req = match q {
            DnsQuery::A(n) => Q::A(n),
            DnsQuery::Txt(n) => Q::Txt(n),
            DnsQuery::Mx(n) => Q::Mx(n),
            DnsQuery::Addresses(n) => Q::Addresses(n),
            DnsQuery::Ns(n) => Q::Ns(n),
        };
        match self.0.dns(req).await {
            Ok(R::Addresses(ips)) => Dns::Found(ips.iter().map(|i| i.to_string()).collect()),
            Ok(R::Listed { addrs, .. }) => {
                Dns::Found(addrs.iter().map(|i| i.to_string()).collect())
            }
            Ok(R::Mx(list)) => Dns::Found(list.into_iter().map(|(_, h)| h).collect()),
            Ok(R::Texts(t) | R::Names(t)) => Dns::Found(t),
            Ok(R::NotFound) => Dns::NotFound,
            Ok(R::NullMx) => Dns::NullMx,
            Ok(R::Tempfail(e)) | Err(e) => Dns::Temp(e),
            // Answers to questions this code never asks.
            Ok(R::MxSec { .. } | R::HostSec { .. } | R::Tlsa { .. } | R::SecureCname(_)) => {
                Dns::Temp("unexpected answer from the resolver".into())
            }
        }
    }

    async fn verify(&self, address: &str) -> Result<postern_ipc::verify::Reply, String> {
        self.0.verify(address).await
    }

    async fn virtual_table(
        &self,
        which: restrict::Virtual,
        address: &str,
    ) -> Result<(bool, bool), String> {
        self.0.virtual_table(which, address).await
    }

    async fn listed(&self, address: &str, local_part: &str, local: bool) -> Result<bool, String> {
        if local {
            self.0
                .local_recipient(&local_part.to_ascii_lowercase())
                .await
        } else {
            self.0.relay_recipient(address, local_part).await
        }
    }
}

/// Runs the chain of the stage `f` is being decided at.
pub async fn decide(chains: &Chains, env: &Env<'_>, f: Facts<'_>) -> Decision {
    let mut d = Decision::default();
    let Some(stage) = f.stage else {
        d.verdict = Some(Verdict::Accept);
        return d;
    };
    for check in chains.of(stage) {
        let v = match check {
            Check::Connections {
                count,
                rate,
                myhostname,
            } => connections(env, &f, *count, *rate, myhostname, &mut d),
            Check::ClientRate { event, limit } => client_rate(env, &f, *event, *limit, &mut d),
            Check::TlsRate { limit } => tls_rate(env, &f, *limit, &mut d),
            Check::AccountRate { limit, unit } => {
                d.check = "smtpd_account_message_rate_limit";
                account_rate(env, &f, *limit, *unit)
            }
            Check::Restrictions => restrictions(chains, env, &f, stage, &mut d).await,
            Check::LocalRecipient => {
                d.check = "local_recipient_maps";
                local_recipient(chains, env, &f).await
            }
            Check::Milter { myhostname } => {
                d.check = "milter";
                super::milter::event(env, &f, stage, myhostname).await
            }
        };
        if v != Verdict::Accept {
            d.verdict = Some(v);
            return d;
        }
    }
    d.verdict = Some(match d.effects.discard.take() {
        Some(text) => Verdict::Discard(text),
        None => Verdict::Accept,
    });
    d
}

fn refuse(code: u16, enh: &str, text: &str) -> Verdict {
    Verdict::Reject {
        reply: r(code, enh, text),
        log: false,
    }
}

/// At connect: Postfix's concurrency, then rate, check.
fn connections(
    env: &Env<'_>,
    f: &Facts<'_>,
    count: u32,
    rate: u32,
    myhostname: &str,
    d: &mut Decision,
) -> Verdict {
    let c = env.conn;
    if c.anvil.is_none() {
        return Verdict::Accept;
    }
    let (what, n, name) = if count > 0 && c.conn_count > count {
        (
            "concurrency",
            c.conn_count,
            "smtpd_client_connection_count_limit",
        )
    } else if rate > 0 && c.conn_rate > rate {
        ("rate", c.conn_rate, "smtpd_client_connection_rate_limit")
    } else {
        return Verdict::Accept;
    };
    d.check = name;
    (env.log)(&format!(
        "warning: Connection {what} limit exceeded: {n} from {} for service {}",
        f.client, c.service
    ));
    refuse(
        421,
        "4.7.0",
        &format!(
            "{myhostname} Error: too many connections from {}",
            f.peer.addr
        ),
    )
}

/// MAIL, RCPT and AUTH: counts the event, refuses past the limit.
fn client_rate(
    env: &Env<'_>,
    f: &Facts<'_>,
    event: Event,
    limit: u32,
    d: &mut Decision,
) -> Verdict {
    let Some(key) = &env.conn.anvil else {
        return Verdict::Accept;
    };
    let n = env.sh.anvil_event(key, event);
    if n <= limit {
        return Verdict::Accept;
    }
    let (name, what, text) = match event {
        Event::Mail => (
            "smtpd_client_message_rate_limit",
            "Message delivery request",
            "too much mail from",
        ),
        Event::Rcpt => (
            "smtpd_client_recipient_rate_limit",
            "Recipient address",
            "too many recipients from",
        ),
        _ => (
            "smtpd_client_auth_rate_limit",
            "AUTH command",
            "too many AUTH commands from",
        ),
    };
    d.check = name;
    (env.log)(&format!(
        "warning: {what} rate limit exceeded: {n} from {} for service {}",
        f.client, env.conn.service
    ));
    refuse(450, "4.7.1", &format!("Error: {text} {}", f.peer.addr))
}

/// STARTTLS from a client already past its new TLS session rate.
fn tls_rate(env: &Env<'_>, f: &Facts<'_>, limit: u32, d: &mut Decision) -> Verdict {
    let Some(key) = &env.conn.anvil else {
        return Verdict::Accept;
    };
    if env.sh.anvil_rate(key, Event::NewTls) <= limit {
        return Verdict::Accept;
    }
    d.check = "smtpd_client_new_tls_session_rate_limit";
    (env.log)(&format!(
        "warning: Refusing STARTTLS request from {} for service {}",
        f.client, env.conn.service
    ));
    refuse(
        454,
        "4.7.0",
        &format!("Error: too many new TLS sessions from {}", f.client),
    )
}

fn account_rate(env: &Env<'_>, f: &Facts<'_>, limit: usize, unit: Duration) -> Verdict {
    match f.login {
        Some(user) if !env.sh.account_message(user, limit, unit) => {
            (env.log)(&format!(
                "warning: message rate limit exceeded: {limit} messages per {}s for sasl_username={user} from {}",
                unit.as_secs(),
                f.client
            ));
            Verdict::Reject {
                reply: r(450, "4.7.1", &format!("Error: too much mail from {user}")),
                log: false,
            }
        }
        _ => Verdict::Accept,
    }
}

async fn restrictions(
    chains: &Chains,
    env: &Env<'_>,
    f: &Facts<'_>,
    stage: Stage,
    d: &mut Decision,
) -> Verdict {
    let sender = f.sender.map(|s| s.address());
    let rcpt = f.recipient.map(|r| r.address());
    let info = chains
        .policy
        .asks_policy()
        .then(|| session_info(env, f, stage));
    let facts = restrict::Facts {
        ip: f.peer.addr,
        name: &f.peer.name,
        namaddr: f.client,
        reverse_name: &env.names.reverse,
        name_status: env.names.status,
        reverse_status: env.names.reverse_status,
        helo: f.helo,
        sender: sender.as_deref(),
        rcpt: rcpt.as_deref(),
        login: f.login,
        tls: f.tls.is_some(),
        pipelined: env.pipelined,
        rcpt_count: f.recipient_count,
        ccert: env.ccert,
        session: info.as_ref(),
    };
    let lk = Broker(env.sh, env.policy);
    let mut run = restrict::eval::Run::new(&lk, &chains.policy, env.access, facts);
    let mut memo = env.memo.borrow().clone();
    let outcome = match stage {
        Stage::Connect => run.client(&mut memo).await,
        Stage::Helo => run.helo(&mut memo).await,
        Stage::Mail => run.mail(&mut memo).await,
        Stage::Rcpt => run.rcpt(&mut memo).await,
        Stage::Data => run.data().await,
        Stage::EndOfData => run.end_of_data().await,
        Stage::Vrfy | Stage::Auth | Stage::StartTls => Outcome::Accept,
    };
    // With smtpd_delay_reject, the client, HELO and sender lists run
    // again for each recipient: only the earlier stages keep their memo.
    if !chains.policy.delay_reject && matches!(stage, Stage::Connect | Stage::Helo | Stage::Mail) {
        *env.memo.borrow_mut() = memo;
    }
    d.notes
        .extend(run.notes.drain(..).map(|n| (n.what, n.text)));
    let effects = std::mem::take(&mut run.effects);
    d.check = run.fired.unwrap_or("defer_if_permit");
    match outcome {
        Outcome::Reject(reply) => Verdict::reject(reply),
        Outcome::Accept => {
            d.effects = effects;
            Verdict::Accept
        }
    }
}

/// What a policy request tells of the session at this decision.
fn session_info(env: &Env<'_>, f: &Facts<'_>, stage: Stage) -> restrict::SessionInfo {
    let c = env.conn;
    let queue_id = f.queue_id.unwrap_or("");
    restrict::SessionInfo {
        protocol_state: match stage {
            Stage::Helo if f.esmtp => "EHLO",
            s => s.log_name(),
        },
        protocol_name: if f.esmtp { "ESMTP" } else { "SMTP" },
        client_port: c.client_port,
        server_address: c.server.map_or(String::new(), |a| {
            crate::access::normalize(a.ip()).to_string()
        }),
        server_port: c.server.map_or(0, |a| a.port()),
        queue_id: queue_id.to_string(),
        // Postfix's changes with each MAIL; so does the queue id.
        instance: if queue_id.is_empty() {
            String::new()
        } else {
            format!("{:x}.{:x}.{queue_id}", std::process::id(), c.serial)
        },
        size: f.size,
        sasl_method: f.sasl_method.unwrap_or("").to_string(),
        tls: c.tls.clone(),
        recipient_count: f.recipient_count,
        only_recipient: f.sole_recipient.map(str::to_string),
    }
}

/// VRFY: Postfix answers from local_recipient_maps.
async fn local_recipient(chains: &Chains, env: &Env<'_>, f: &Facts<'_>) -> Verdict {
    let Some(rcpt) = f.recipient else {
        return Verdict::Accept;
    };
    if !chains.policy.local_recipient_maps || !env.access.is_local_domain(&rcpt.domain) {
        return Verdict::Accept;
    }
    let lp = rcpt.local_unquoted();
    let local = restrict::keys::strip_extension(&lp, &chains.policy.recipient_delimiter)
        .to_ascii_lowercase();
    if local == "postmaster" {
        return Verdict::Accept;
    }
    let addr = rcpt.address();
    match env.sh.local_recipient(&local).await {
        Ok(true) => Verdict::Accept,
        Ok(false) => Verdict::Reject {
            reply: r(
                550,
                "5.1.1",
                &format!(
                    "<{addr}>: Recipient address rejected: User unknown in local recipient table"
                ),
            ),
            log: false,
        },
        Err(e) => {
            (env.log)(&format!("warning: {e}"));
            Verdict::Reject {
                reply: r(451, "4.3.0", &format!("<{addr}>: Temporary lookup failure")),
                log: false,
            }
        }
    }
}
