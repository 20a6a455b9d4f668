//! smtpd_milters at the SMTP stages: the session's Milters hear CONNECT,
//! HELO, MAIL and each RCPT as they happen (through the milter role, which
//! holds the connections), and their refusals are the client's replies.
//! The message itself goes to them from cleanup, which attaches to this
//! session by its ticket (see `milter/mod.rs`).
use std::time::Duration;

use postern_ipc::milter::{Open, Outcome, Request, Verdict as MilterVerdict};
use postern_proto::smtp::Reply;
use postern_proto::smtp::server::{Facts, Stage, Verdict};

use super::checks::Env;

/// How long smtpd waits for the milter role's answer to one event: the
/// role keeps each Milter's own deadlines (milter_*_timeout); this only
/// bounds a role that stopped answering.
const BUDGET: Duration = Duration::from_secs(600);

/// The macro values smtpd knows at this point of the session (the milter
/// role sends each Milter the ones its lists name).
fn macros(env: &Env<'_>, f: &Facts<'_>) -> Vec<(String, String)> {
    let c = env.conn;
    let mut m: Vec<(String, String)> = vec![
        (
            "_".into(),
            format!("{} [{}]", env.names.reverse, f.peer.addr),
        ),
        ("{client_addr}".into(), f.peer.addr.to_string()),
        ("{client_name}".into(), f.peer.name.clone()),
        ("{client_ptr}".into(), env.names.reverse.clone()),
        ("{client_port}".into(), f.peer.port.to_string()),
    ];
    if let Some(s) = c.server {
        m.push(("{daemon_addr}".into(), s.ip().to_string()));
        m.push(("{daemon_port}".into(), s.port().to_string()));
    }
    if let Some(t) = &c.tls {
        m.push(("{tls_version}".into(), t.protocol.to_string()));
        m.push(("{cipher}".into(), t.cipher.clone()));
        m.push(("{cipher_bits}".into(), t.bits.to_string()));
    }
    if let Some(q) = f.queue_id {
        m.push(("i".into(), q.to_string()));
    }
    if let Some(l) = f.login {
        m.push(("{auth_authen}".into(), l.to_string()));
        m.push((
            "{auth_type}".into(),
            f.sasl_method.unwrap_or("").to_string(),
        ));
    }
    if let Some(s) = f.sender {
        m.push(("{mail_addr}".into(), s.address()));
        m.push(("{mail_host}".into(), s.domain.clone()));
        let mailer = if s.is_null() { "local" } else { "smtp" };
        m.push(("{mail_mailer}".into(), mailer.into()));
    }
    m
}

/// One event to the session's Milters; their verdict as smtpd's.
pub async fn event(env: &Env<'_>, f: &Facts<'_>, stage: Stage, myhostname: &str) -> Verdict {
    let m = macros(env, f);
    let reqs = match stage {
        Stage::Connect => vec![Request::Session(Open {
            milter: String::new(),
            macros: m,
            host: f.peer.name.clone(),
            addr: f.peer.addr.to_string(),
            port: f.peer.port,
            helo: String::new(),
            mail: Vec::new(),
        })],
        Stage::Helo => vec![
            Request::Macros(m),
            Request::Helo(f.helo.unwrap_or("").to_string()),
        ],
        Stage::Mail => {
            let s = f.sender.map(|s| s.address()).unwrap_or_default();
            vec![Request::Macros(m), Request::Mail(vec![format!("<{s}>")])]
        }
        Stage::Rcpt => {
            let r = f.recipient.map(|r| r.address()).unwrap_or_default();
            vec![Request::Macros(m), Request::Rcpt(format!("<{r}>"))]
        }
        _ => return Verdict::Accept,
    };
    let v = match env.sh.milter(env.milter, reqs, BUDGET).await {
        Ok(v) => v,
        Err(e) => {
            (env.log)(&format!("warning: milter service: {e}"));
            return refuse(env, f, stage, 451, "4.3.0", "Error: internal error");
        }
    };
    if v.ticket != 0 {
        env.milter.ticket.set(v.ticket);
    }
    if stage == Stage::Connect {
        return at_connect(env, f, &v, myhostname);
    }
    verdict(env, f, stage, &v)
}

/// A refusal at connect, as Postfix's smtpd words it: 5xx is `554 HOST
/// ESMTP not accepting connections` (and every later command is refused),
/// 421 ends the session; a 4xx greets as usual (the Milter's later events
/// carry its refusal).
fn at_connect(env: &Env<'_>, f: &Facts<'_>, v: &MilterVerdict, myhostname: &str) -> Verdict {
    let line = |code: u16, text: &str| {
        (env.log)(&format!(
            "NOQUEUE: milter-reject: CONNECT from {}: {code} {text}; proto=SMTP",
            f.client
        ));
    };
    match v.outcome {
        Outcome::Reject => {
            let text = format!("{myhostname} ESMTP not accepting connections");
            line(554, &text);
            Verdict::Reject {
                reply: Reply::bare(554, &text),
                log: false,
            }
        }
        Outcome::Shutdown => {
            let text = format!("{myhostname} Service unavailable - try again later");
            line(421, &text);
            Verdict::Reject {
                reply: Reply::bare(421, &text),
                log: false,
            }
        }
        _ => Verdict::Accept,
    }
}

fn verdict(env: &Env<'_>, f: &Facts<'_>, stage: Stage, v: &MilterVerdict) -> Verdict {
    match v.outcome {
        Outcome::Continue | Outcome::Accept => Verdict::Accept,
        Outcome::Discard => Verdict::Discard("milter triggers DISCARD action".into()),
        Outcome::Reject => reply(env, f, stage, v, 550, "5.7.1", "Command rejected"),
        Outcome::Tempfail => reply(
            env,
            f,
            stage,
            v,
            451,
            "4.7.1",
            "Service unavailable - try again later",
        ),
        Outcome::Shutdown => reply(env, f, stage, v, 421, "4.7.0", "Server closing connection"),
    }
}

/// The Milter's own reply when it gave one, else the default text.
fn reply(
    env: &Env<'_>,
    f: &Facts<'_>,
    stage: Stage,
    v: &MilterVerdict,
    code: u16,
    enh: &str,
    text: &str,
) -> Verdict {
    let parsed = v.reply.first().and_then(|l| {
        let (c, rest) = l.split_once(' ')?;
        let c: u16 = c.parse().ok()?;
        let (e, t) = match rest.split_once(' ') {
            Some((e, t)) if e.split('.').count() == 3 && e.starts_with(['4', '5']) => {
                (e.to_string(), t.to_string())
            }
            _ => (enh.to_string(), rest.to_string()),
        };
        // Further lines of a multi-line reply join the first.
        let more: Vec<&str> = v.reply[1..]
            .iter()
            .filter_map(|l| l.splitn(3, ' ').nth(2))
            .collect();
        let t = if more.is_empty() {
            t
        } else {
            format!("{t} {}", more.join(" "))
        };
        Some((c, e, t))
    });
    let (code, enh, text) = parsed.unwrap_or((code, enh.to_string(), text.to_string()));
    refuse(env, f, stage, code, &enh, &text)
}

/// The refusal, with Postfix's `milter-reject:` log line.
fn refuse(env: &Env<'_>, f: &Facts<'_>, stage: Stage, code: u16, enh: &str, text: &str) -> Verdict {
    let reply = Reply::new(code, enh, text);
    let mut line = format!(
        "{}: milter-reject: {} from {}: {code} {enh} {text};",
        f.queue_id.unwrap_or("NOQUEUE"),
        stage.log_name(),
        f.client
    );
    if let Some(s) = f.sender {
        line.push_str(&format!(" from=<{}>", s.address()));
    }
    if let Some(r) = f.recipient {
        line.push_str(&format!(" to=<{}>", r.address()));
    }
    line.push_str(&format!(
        " proto={} helo=<{}>",
        if f.esmtp { "ESMTP" } else { "SMTP" },
        f.helo.unwrap_or("")
    ));
    (env.log)(&line);
    Verdict::Reject { reply, log: false }
}
