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

pub enum QueueCmd {
    List { json: bool },
    Show(String),
    Flush,
    Delete(Vec<String>),
    Hold(Vec<String>),
    Release(Vec<String>),
    Requeue(Vec<String>),
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

pub fn run(socket: &Path, cmd: QueueCmd) -> ExitCode {
    let req = match cmd {
        QueueCmd::List { json } => {
            return match entries(socket) {
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
        QueueCmd::Show(id) => Request::Show(id),
        QueueCmd::Flush => Request::Flush,
        QueueCmd::Delete(ids) => Request::Delete(ids),
        QueueCmd::Hold(ids) => Request::Hold(ids),
        QueueCmd::Release(ids) => Request::Release(ids),
        QueueCmd::Requeue(ids) => Request::Requeue(ids),
    };
    match call(socket, req) {
        Ok(replies) => {
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
        Err(e) => fail(e),
    }
}
