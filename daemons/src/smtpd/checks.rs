//! The checks behind the session core's decision points: one chain per
//! SMTP stage, asked in order; the first check that does not accept
//! decides. Restrictions, access maps, policy services and Milters plug in
//! here as new [`Check`]s on the stage where Postfix evaluates them.
use std::time::Duration;

use postern_proto::smtp::Reply;
use postern_proto::smtp::server::{Facts, Stage, Stages, Verdict};

use super::pool::Shared;
use crate::access::{self, Access, Ctx};

/// One check of a chain.
#[derive(Debug, Clone)]
pub enum Check {
    /// smtpd_account_message_rate_limit: messages per SASL account.
    AccountRate { limit: usize, unit: Duration },
    /// The smtpd_*_restrictions lists, all evaluated at RCPT time as
    /// Postfix does with smtpd_delay_reject = yes.
    Restrictions,
    /// local_recipient_maps: unknown local users are refused.
    LocalRecipient { reject_code: u16 },
}

/// The chains of one listener.
#[derive(Debug, Default)]
pub struct Chains {
    chains: Vec<(Stage, Vec<Check>)>,
}

impl Chains {
    pub fn new(access: &Access, p: &postern_config::Params) -> Result<Chains, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let mut c = Chains::default();
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
        if access.rcpt_lists().iter().any(|(_, l)| !l.is_empty()) {
            c.add(Stage::Rcpt, Check::Restrictions);
        }
        let reject_code = p.int("unknown_local_recipient_reject_code").map_err(e)? as u16;
        if !p.list("local_recipient_maps").map_err(e)?.is_empty() {
            c.add(Stage::Rcpt, Check::LocalRecipient { reject_code });
        }
        c.add(Stage::Vrfy, Check::LocalRecipient { reject_code: 550 });
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
    pub recipient_delimiter: &'a str,
    pub log: &'a dyn Fn(&str),
}

fn r(code: u16, enh: &str, text: &str) -> Reply {
    Reply::new(code, enh, text)
}

/// Runs the chain of the stage `f` is being decided at.
pub async fn decide(chains: &Chains, env: &Env<'_>, f: Facts<'_>) -> Verdict {
    let Some(stage) = f.stage else {
        return Verdict::Accept;
    };
    for check in chains.of(stage) {
        let v = match check {
            Check::AccountRate { limit, unit } => account_rate(env, &f, *limit, *unit),
            Check::Restrictions => restrictions(env, &f).await,
            Check::LocalRecipient { reject_code } => {
                local_recipient(env, &f, stage, *reject_code).await
            }
        };
        if v != Verdict::Accept {
            return v;
        }
    }
    Verdict::Accept
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

async fn restrictions(env: &Env<'_>, f: &Facts<'_>) -> Verdict {
    let (Some(rcpt), sender) = (f.recipient, f.sender) else {
        return Verdict::Accept;
    };
    let addr = rcpt.address();
    let sender = sender.map(|s| s.address()).unwrap_or_default();
    // Who owns the sender, when a list asks (smtpd_sender_login_maps).
    let needs_owner = env
        .access
        .rcpt_lists()
        .iter()
        .any(|(_, l)| l.iter().any(|r| r.needs_sender_login()));
    let owners = if needs_owner && !sender.is_empty() {
        match env.sh.sender_logins(&sender).await {
            Ok(o) => o,
            Err(e) => {
                (env.log)(&format!("warning: {e}"));
                return Verdict::reject(r(
                    451,
                    "4.3.0",
                    &format!("<{sender}>: Temporary lookup failure"),
                ));
            }
        }
    } else {
        None
    };
    let ctx = Ctx {
        ip: f.peer.addr,
        client: f.client,
        helo: f.helo.unwrap_or(""),
        sender: &sender,
        rcpt: &addr,
        domain: &rcpt.domain,
        login: f.login,
        sender_owners: owners.as_deref(),
    };
    // Each list decides for itself: a permit ends that list, a reject
    // ends the command (Postfix's semantics).
    for (stage, list) in env.access.rcpt_lists() {
        if let access::Verdict::Reject(code, enh, text) = env.access.check(list, stage, &ctx) {
            return Verdict::reject(r(code, enh, &text));
        }
    }
    Verdict::Accept
}

async fn local_recipient(env: &Env<'_>, f: &Facts<'_>, stage: Stage, code: u16) -> Verdict {
    let Some(rcpt) = f.recipient else {
        return Verdict::Accept;
    };
    if !env.access.is_local_domain(&rcpt.domain) {
        return Verdict::Accept;
    }
    let mut local = rcpt.local_unquoted().to_ascii_lowercase();
    let delim = env.recipient_delimiter;
    if !delim.is_empty()
        && let Some(i) = local.find(|c| delim.contains(c))
    {
        local.truncate(i);
    }
    // RFC 5321 4.5.1: postmaster is always accepted.
    if local == "postmaster" {
        return Verdict::Accept;
    }
    let addr = rcpt.address();
    // VRFY answers are not reject events: Postfix logs none for them.
    let log = stage != Stage::Vrfy;
    match env.sh.local_recipient(&local).await {
        Ok(true) => Verdict::Accept,
        Ok(false) => Verdict::Reject {
            reply: r(
                code,
                if code >= 500 { "5.1.1" } else { "4.1.1" },
                &format!(
                    "<{addr}>: Recipient address rejected: User unknown in local recipient table"
                ),
            ),
            log,
        },
        Err(e) => {
            (env.log)(&format!("warning: {e}"));
            Verdict::Reject {
                reply: r(451, "4.3.0", &format!("<{addr}>: Temporary lookup failure")),
                log,
            }
        }
    }
}
