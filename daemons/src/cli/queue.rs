//! `postern queue ...` (postqueue and postsuper): through the control socket
//! the master hands this command a channel to the queue manager.
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use postern_ipc::admin_qmgr::{self as aq, Entry, Reply, Request};
use postern_ipc::control::{Reply as CtlReply, Request as CtlRequest};
use postern_ipc::{Channel, Endpoint, Message};

use super::client::{self, ClientError};
use super::fail;
use super::select::{self, Select};

pub enum QueueCmd {
    List {
        json: bool,
        select: Select,
    },
    Show(String),
    Flush,
    /// delete, hold, release or requeue what `select` picks.
    Act {
        op: Op,
        select: Select,
        dry_run: bool,
    },
    /// How mail for a domain or address would be routed now.
    Explain {
        target: String,
        json: bool,
    },
    /// qshape: recipient domains by age.
    Summary {
        json: bool,
        top: usize,
        select: Select,
    },
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Delete,
    Hold,
    Release,
    Requeue,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Delete => "delete",
            Op::Hold => "hold",
            Op::Release => "release",
            Op::Requeue => "requeue",
        }
    }

    fn request(self, ids: Vec<String>) -> Request {
        match self {
            Op::Delete => Request::Delete(ids),
            Op::Hold => Request::Hold(ids),
            Op::Release => Request::Release(ids),
            Op::Requeue => Request::Requeue(ids),
        }
    }
}

fn channel(socket: &Path) -> Result<std::os::fd::OwnedFd, ClientError> {
    match client::request(socket, CtlRequest::Queue)? {
        CtlReply::Channel(fd) => Ok(fd),
        CtlReply::Error(e) => Err(ClientError::Other(e)),
        _ => Err(ClientError::Other(
            "unexpected reply from the master".into(),
        )),
    }
}

/// Runs one queue request and collects every reply up to the last.
pub fn call(socket: &Path, req: Request) -> Result<Vec<Reply>, ClientError> {
    let fd = channel(socket)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Other(e.to_string()))?;
    rt.block_on(async {
        let mut ch = Channel::new(fd, <Reply as Message>::MAX_FRAME, Duration::from_secs(30))
            .map_err(|e| ClientError::Other(e.to_string()))?;
        ch.hello_client(aq::EDGE, aq::VERSION)
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?;
        let mut ep = Endpoint::<Request, Reply>::from_channel(ch);
        ep.send(&req)
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?;
        let mut out = Vec::new();
        loop {
            let r = ep
                .recv_within(Duration::from_secs(60))
                .await
                .map_err(|e| ClientError::Other(format!("queue manager: {e}")))?;
            let last = !matches!(r, Reply::Entries(_) | Reply::Content(_));
            out.push(r);
            if last {
                return Ok(out);
            }
        }
    })
}

pub fn entries(socket: &Path) -> Result<Vec<Entry>, ClientError> {
    let mut all = Vec::new();
    for r in call(socket, Request::List)? {
        match r {
            Reply::Entries(e) => all.extend(e),
            Reply::Error(e) => return Err(ClientError::Other(e)),
            _ => {}
        }
    }
    Ok(all)
}

/// Postfix's `mailq` text, which scripts parse.
pub fn mailq_text(list: &[Entry]) -> String {
    if list.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out =
        String::from("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut bytes = 0u64;
    for e in list {
        let mark = match e.queue_name.as_str() {
            "active" => "*",
            "hold" => "!",
            _ => "",
        };
        let when = jiff::Timestamp::from_second(e.arrival_time as i64)
            .map(|t| {
                t.to_zoned(crate::clock::tz())
                    .strftime("%a %b %e %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        let sender = if e.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            e.sender.as_str()
        };
        out.push_str(&format!(
            "{:<12}{:>8} {:<20}  {sender}\n",
            format!("{}{mark}", e.queue_id),
            e.message_size,
            when
        ));
        let mut last_reason = String::new();
        for r in &e.recipients {
            if !r.delay_reason.is_empty() && r.delay_reason != last_reason {
                out.push_str(&format!("{:<41}({})\n", "", r.delay_reason));
                last_reason = r.delay_reason.clone();
            }
            out.push_str(&format!("{:<41}{}\n", "", r.address));
        }
        out.push('\n');
        bytes += e.message_size;
    }
    let n = list.len();
    out.push_str(&format!(
        "-- {} Kbytes in {n} Request{}.\n",
        bytes.div_ceil(1024),
        if n == 1 { "" } else { "s" }
    ));
    out
}

/// One compact JSON object per line, with `postqueue -j`'s field names.
pub fn json_lines(list: &[Entry]) -> String {
    let mut out = String::new();
    for e in list {
        let rcpts: Vec<serde_json::Value> = e
            .recipients
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({ "address": r.address });
                if !r.delay_reason.is_empty() {
                    v["delay_reason"] = serde_json::Value::String(r.delay_reason.clone());
                }
                v
            })
            .collect();
        let v = serde_json::json!({
            "queue_name": e.queue_name,
            "queue_id": e.queue_id,
            "arrival_time": e.arrival_time,
            "message_size": e.message_size,
            "forced_expire": e.forced_expire,
            "sender": e.sender,
            "recipients": rcpts,
        });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The queued messages `select` picks.
fn selected(socket: &Path, select: &Select) -> Result<Vec<Entry>, ClientError> {
    let now = now();
    Ok(entries(socket)?
        .into_iter()
        .filter(|e| select.matches(e, now))
        .collect())
}

pub fn run(socket: &Path, cmd: QueueCmd) -> ExitCode {
    let req = match cmd {
        QueueCmd::List { json, select } => {
            return match selected(socket, &select) {
                Ok(list) => {
                    print!(
                        "{}",
                        if json {
                            json_lines(&list)
                        } else {
                            mailq_text(&list)
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        QueueCmd::Summary { json, top, select } => {
            return match selected(socket, &select) {
                Ok(list) => {
                    let refs: Vec<&Entry> = list.iter().collect();
                    let shape = select::shape(&refs, now(), top);
                    if json {
                        let q = select.queue.as_deref().unwrap_or("all");
                        println!("{}", shape.json(q));
                    } else {
                        print!("{}", shape.text());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        QueueCmd::Show(id) => Request::Show(id),
        QueueCmd::Flush => Request::Flush,
        QueueCmd::Explain { target, json } => return explain(socket, target, json),
        QueueCmd::Act {
            op,
            select,
            dry_run,
        } => {
            if select.ids_only() && !dry_run {
                if select.ids.is_empty() {
                    return fail(format!(
                        "queue {}: name queue ids, ALL, or a selector (--sender, --recipient-domain, --older-than, --queue, --reason)",
                        op.verb()
                    ));
                }
                op.request(select.ids)
            } else {
                return act_on_selection(socket, op, &select, dry_run);
            }
        }
    };
    match call(socket, req) {
        Ok(replies) => report(replies),
        Err(e) => fail(e),
    }
}

/// Lists what `select` picks, then acts on those ids (at most MAX_IDS a
/// request); with `dry_run`, only says what it would touch.
fn act_on_selection(socket: &Path, op: Op, select: &Select, dry_run: bool) -> ExitCode {
    let list = match selected(socket, select) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if dry_run {
        for e in &list {
            println!("would {}: {}", op.verb(), e.queue_id);
        }
        eprintln!(
            "postern: {} message(s) selected; nothing changed (--dry-run)",
            list.len()
        );
        return ExitCode::SUCCESS;
    }
    if list.is_empty() {
        eprintln!("postern: no queued message matches");
        return ExitCode::SUCCESS;
    }
    let ids: Vec<String> = list.into_iter().map(|e| e.queue_id).collect();
    let mut status = ExitCode::SUCCESS;
    for chunk in ids.chunks(aq::MAX_IDS) {
        match call(socket, op.request(chunk.to_vec())) {
            Ok(replies) => {
                if report(replies) != ExitCode::SUCCESS {
                    status = ExitCode::FAILURE;
                }
            }
            Err(e) => return fail(e),
        }
    }
    status
}

/// Prints what the queue manager answered; failure if it reported an error.
fn report(replies: Vec<Reply>) -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for r in replies {
        match r {
            Reply::Content(c) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(&c);
            }
            Reply::Done(lines) => {
                for line in lines {
                    eprintln!("postern: {line}");
                }
            }
            Reply::Error(e) => {
                eprintln!("postern: {e}");
                status = ExitCode::FAILURE;
            }
            _ => {}
        }
    }
    status
}

fn explain(socket: &Path, target: String, json: bool) -> ExitCode {
    let replies = match call(socket, Request::Explain(target)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let Some(x) = replies.into_iter().find_map(|r| match r {
        Reply::Explained(x) => Some(x),
        Reply::Error(e) => {
            eprintln!("postern: {e}");
            None
        }
        _ => None,
    }) else {
        return ExitCode::FAILURE;
    };
    if json {
        let hops: Vec<serde_json::Value> = x
            .hops
            .iter()
            .map(|h| {
                serde_json::json!({
                    "host": h.host, "preference": h.preference, "addresses": h.addresses,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "address": x.address,
                "transport": x.transport,
                "nexthop": x.nexthop,
                "outcome": x.outcome,
                "hosts": hops,
                "dns_error": x.dns_error,
                "tls_level": x.tls_level,
                "tls_reason": x.tls_why,
                "concurrency_limit": x.concurrency,
                "rate_delay_seconds": x.rate_delay_ms as f64 / 1000.0,
                "recipient_limit": x.recipient_limit,
                "in_flight": x.in_flight,
                "waiting": x.waiting,
                "deferred_messages": x.deferred,
                "next_retry": x.next_retry,
            })
        );
        return ExitCode::SUCCESS;
    }
    let mut out = format!("address:    {}\ntransport:  {}\n", x.address, x.transport);
    if !x.outcome.is_empty() {
        out.push_str(&format!("outcome:    {}\n", x.outcome));
    }
    if !x.nexthop.is_empty() {
        out.push_str(&format!("next hop:   {}\n", x.nexthop));
    }
    for h in &x.hops {
        out.push_str(&format!(
            "host:       {} (preference {}): {}\n",
            h.host,
            h.preference,
            h.addresses.join(", ")
        ));
    }
    if !x.dns_error.is_empty() {
        out.push_str(&format!("no host:    {}\n", x.dns_error));
    }
    if !x.tls_level.is_empty() {
        out.push_str(&format!("TLS:        {} ({})\n", x.tls_level, x.tls_why));
    }
    if x.concurrency > 0 {
        out.push_str(&format!(
            "limits:     concurrency {}, rate delay {}s, {} recipients per delivery\n",
            x.concurrency,
            x.rate_delay_ms as f64 / 1000.0,
            x.recipient_limit
        ));
        out.push_str(&format!(
            "now:        {} in flight, {} recipients waiting\n",
            x.in_flight, x.waiting
        ));
    }
    out.push_str(&format!("deferred:   {} message(s)", x.deferred));
    if x.next_retry > 0 {
        let when = jiff::Timestamp::from_second(x.next_retry as i64)
            .map(|t| {
                t.to_zoned(crate::clock::tz())
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        out.push_str(&format!(", next attempt {when}"));
    }
    out.push('\n');
    print!("{out}");
    ExitCode::SUCCESS
}
