//! bounce: delivery status notifications (RFC 3464).
//!
//! A notice is a new message from the null sender to the original sender,
//! queued through cleanup like any other. It refers to the original
//! message with In-Reply-To and References (L278), carries only the
//! recipients' DSN-safe texts (no local paths or command details, L1011),
//! and returns the headers or the whole message as RET asked. A message
//! from the null sender gets no notice: a bounce never bounces.
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use postern_config::{Params, Role};
use postern_ipc::bounce::{Kind, Reply, Request};
use postern_ipc::edge::Answer;
use postern_ipc::{bounce as bn, smtpd_cleanup as sc};
use postern_proto::header::{self, Split};
use postern_proto::queue as rec;

use crate::daemon::{self, Context, Switchboard};
use crate::{clock, warn};

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Bounce, ipc_fd, |_params| Ok((serve, Vec::new())))
}

struct Settings {
    myhostname: String,
    /// The From: domain of notices (Postfix qualifies its unqualified
    /// MAILER-DAEMON with $myorigin), which DKIM signs them with.
    myorigin: String,
    mail_name: String,
    /// notify_classes: which postmaster notices are sent.
    classes: Vec<String>,
    bounce_notice_recipient: String,
    double_bounce_notice_recipient: String,
    delay_notice_recipient: String,
    /// The sender of double-bounce notices: mail that comes back to it is
    /// never bounced again (Postfix's double_bounce_sender).
    double_bounce_sender: String,
    /// requiretls_redact_dsn: a notice about a REQUIRETLS message carries
    /// its headers only and is sent without REQUIRETLS (RFC 8689 §5);
    /// otherwise it returns what RET asked for, with REQUIRETLS.
    redact: bool,
}

impl Settings {
    fn new(p: &Params) -> Settings {
        Settings {
            myhostname: p.str("myhostname").into(),
            redact: p.bool("requiretls_redact_dsn").unwrap_or(true),
            myorigin: p.str("myorigin").into(),
            mail_name: p.str("mail_name").into(),
            classes: p
                .list("notify_classes")
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            bounce_notice_recipient: p.str("bounce_notice_recipient").into(),
            double_bounce_notice_recipient: p.str("2bounce_notice_recipient").into(),
            delay_notice_recipient: p.str("delay_notice_recipient").into(),
            double_bounce_sender: format!(
                "{}@{}",
                p.str("double_bounce_sender"),
                p.str("myhostname")
            ),
        }
    }

    fn notifies(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == class)
    }
}

/// Who a notice goes to: the original sender, or the postmaster (a copy
/// with the headers only, under notify_classes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum To<'a> {
    Sender,
    Postmaster(&'a str),
}

async fn serve(mut ctx: Context) {
    let s = Rc::new(Settings::new(&ctx.params));
    let sb = ctx.switchboard.clone();
    let (query, transfer) = (ctx.query_timeout(), ctx.transfer_timeout());
    crate::daemon::serve_channels(&mut ctx, |from, fd| {
        let (s, sb) = (s.clone(), sb.clone());
        async move {
            match from {
                Role::Qmgr => channel(fd, s, sb, query, transfer).await,
                other => warn!("unexpected channel from {other}"),
            }
        }
    })
    .await;
}

async fn channel(
    fd: OwnedFd,
    s: Rc<Settings>,
    sb: Switchboard,
    query: Duration,
    transfer: Duration,
) {
    crate::edges::serve::<bn::Link, _, _>(Role::Bounce, Role::Qmgr, fd, transfer, |req| {
        let (s, sb) = (s.clone(), sb.clone());
        async move {
            let failure = req.kind == Kind::Failure;
            Answer::Reply(
                if req.sender.eq_ignore_ascii_case(&s.double_bounce_sender) {
                    Reply::Dropped("the original sender is the double-bounce sender".into())
                } else if req.sender.is_empty() {
                    // A bounce that cannot be delivered: a double bounce, to
                    // the postmaster when notify_classes has 2bounce.
                    if failure && s.notifies("2bounce") {
                        let to = To::Postmaster(&s.double_bounce_notice_recipient);
                        send(&s, &sb, query, &req, to).await
                    } else {
                        Reply::Dropped(
                            "the original sender is the null sender (a bounce never bounces)"
                                .into(),
                        )
                    }
                } else {
                    let reply = send(&s, &sb, query, &req, To::Sender).await;
                    // The postmaster's copy (headers only), after the sender's.
                    let copy = match req.kind {
                        Kind::Failure if s.notifies("bounce") => Some(&s.bounce_notice_recipient),
                        Kind::Delay if s.notifies("delay") => Some(&s.delay_notice_recipient),
                        _ => None,
                    };
                    if let Some(pm) = copy
                        && let Reply::Failed(e) =
                            send(&s, &sb, query, &req, To::Postmaster(pm)).await
                    {
                        warn!("{}: postmaster notice to {pm}: {e}", req.queue_id);
                    }
                    reply
                },
            )
        }
    })
    .await;
}

/// Builds one notice and queues it.
async fn send(s: &Settings, sb: &Switchboard, query: Duration, req: &Request, to: To<'_>) -> Reply {
    let (rcpt, sender) = match to {
        To::Sender => (req.sender.as_str(), ""),
        // Postmaster notices come from the double-bounce sender, so that
        // one that cannot be delivered is dropped, never bounced again.
        To::Postmaster(pm) => (pm, s.double_bounce_sender.as_str()),
    };
    match notice(s, req, to, rcpt) {
        Ok((msg, requiretls)) => match submit(sb, query, sender, rcpt, &msg, requiretls).await {
            Ok(id) => Reply::Queued(id),
            Err(e) => Reply::Failed(e),
        },
        Err(e) => Reply::Failed(e),
    }
}

/// Builds the multipart/report notice.
/// Also whether the notice must go out with REQUIRETLS.
fn notice(s: &Settings, req: &Request, to: To<'_>, rcpt: &str) -> Result<(Vec<u8>, bool), String> {
    let buf = crate::fsutil::read_queue_file(&req.file)
        .map_err(|e| format!("cannot read {}: {e}", req.queue_id))?;
    let (records, _) = rec::decode_all(&buf);
    let original = rec::content(&records);
    let headers_end = match header::split(&original, true) {
        Split::Done { headers, .. } => headers,
        Split::Incomplete => original.len(),
    };
    let fields = header::fields(&original[..headers_end]);
    // A REQUIRETLS message: its record, or the header that carries it.
    let requiretls = records.iter().any(|(_, r)| *r == rec::Record::RequireTls)
        || fields
            .iter()
            .any(|f| f.is("Require-TLS-ESMTP") && f.value().trim().eq_ignore_ascii_case("yes"));
    let orig_id = fields
        .iter()
        .find(|f| f.is("Message-ID"))
        .map(|f| f.value())
        .unwrap_or_default();
    let boundary = format!(
        "{}.{}/{}",
        req.queue_id,
        clock::now().timestamp().as_second(),
        s.myhostname
    );
    let (subject, intro, action) = match req.kind {
        Kind::Failure => (
            "Undelivered Mail Returned to Sender",
            "I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients. It's attached below.",
            "failed",
        ),
        Kind::Delay => (
            "Delayed Mail (still being retried)",
            "Your message could not be delivered for more than a while.\nIt will be retried until it is too old.\n\nThis is a warning only; you do not need to send the message again.",
            "delayed",
        ),
        Kind::Success => (
            "Successful Mail Delivery Report",
            "Your message was successfully delivered to the destination(s)\nlisted below.",
            "delivered",
        ),
        // Postfix's "sendmail -v" report: each recipient's own action.
        Kind::Trace => (
            "Mail Delivery Status Report",
            "Enclosed is the mail delivery report that you requested.",
            "",
        ),
    };
    let arrival = jiff::Timestamp::from_microsecond(req.arrival_us as i64)
        .map(|t| {
            t.to_zoned(clock::tz())
                .strftime("%a, %e %b %Y %H:%M:%S %z (%Z)")
                .to_string()
        })
        .unwrap_or_default();
    let mut m = String::new();
    m.push_str(&format!(
        "From: MAILER-DAEMON@{} (Mail Delivery System)\r\n",
        s.myorigin
    ));
    m.push_str(&format!("To: {rcpt}\r\n"));
    match (to, req.kind) {
        (To::Sender, _) => m.push_str(&format!("Subject: {subject}\r\n")),
        (To::Postmaster(_), Kind::Delay) => {
            m.push_str("Subject: Postmaster Warning: Delayed Mail\r\n")
        }
        (To::Postmaster(_), _) => m.push_str("Subject: Postmaster Copy: Undelivered Mail\r\n"),
    }
    if !orig_id.is_empty() {
        m.push_str(&format!(
            "In-Reply-To: {orig_id}\r\nReferences: {orig_id}\r\n"
        ));
    }
    m.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"));
    m.push_str(&format!(
        "This is the mail system at host {}.\r\n\r\n{}\r\n\r\nFor further assistance, please send mail to postmaster.\r\n\r\n",
        s.myhostname,
        intro.replace('\n', "\r\n")
    ));
    m.push_str(&format!(
        "                   The {} program\r\n\r\n",
        s.mail_name
    ));
    for r in &req.recipients {
        m.push_str(&format!("<{}>: {}\r\n", r.address, r.text));
    }
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"));
    m.push_str(&format!("Reporting-MTA: dns; {}\r\n", s.myhostname));
    m.push_str(&format!("X-Postern-Queue-ID: {}\r\n", req.queue_id));
    m.push_str(&format!("X-Postern-Sender: rfc822; {}\r\n", req.sender));
    if !req.envid.is_empty() {
        m.push_str(&format!("Original-Envelope-Id: {}\r\n", req.envid));
    }
    m.push_str(&format!("Arrival-Date: {arrival}\r\n"));
    for r in &req.recipients {
        // A success report for a hop that does not speak DSN is "relayed"
        // (RFC 3464 2.3.3); local delivery is "delivered".
        let action = match (req.kind, r.dsn.as_bytes().first()) {
            (Kind::Success, _) | (Kind::Trace, Some(b'2')) if !r.remote_mta.is_empty() => "relayed",
            (Kind::Trace, Some(b'2')) => "delivered",
            (Kind::Trace, Some(b'4')) => "delayed",
            (Kind::Trace, _) => "failed",
            _ => action,
        };
        m.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", r.address));
        if let Some((kind, addr)) = r.orcpt.split_once(';') {
            m.push_str(&format!("Original-Recipient: {kind}; {addr}\r\n"));
        }
        m.push_str(&format!("Action: {action}\r\nStatus: {}\r\n", r.dsn));
        if !r.remote_mta.is_empty() {
            m.push_str(&format!(
                "Remote-MTA: dns; {}\r\nDiagnostic-Code: smtp; {}\r\n",
                r.remote_mta, r.text
            ));
        } else {
            m.push_str(&format!("Diagnostic-Code: X-Postern; {}\r\n", r.text));
        }
    }
    // RET=HDRS (2), and delay or success notices, return the headers only.
    // The postmaster sees the headers only (Postfix's postmaster copies).
    // requiretls_redact_dsn: a REQUIRETLS message's body never travels in
    // a notice that may take a path without TLS.
    let full =
        req.ret != 2 && req.kind == Kind::Failure && to == To::Sender && !(requiretls && s.redact);
    let (desc, ctype, body): (&str, &str, &[u8]) = if full {
        ("Undelivered Message", "message/rfc822", &original)
    } else {
        (
            "Message Headers",
            "text/rfc822-headers",
            &original[..headers_end],
        )
    };
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Description: {desc}\r\nContent-Type: {ctype}\r\n\r\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(body);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((out, requiretls && !s.redact && to == To::Sender))
}

/// Queues the notice through cleanup: one recipient, from `sender` (the
/// null sender for notices to the original sender).
async fn submit(
    sb: &Switchboard,
    query: Duration,
    sender: &str,
    to: &str,
    msg: &[u8],
    requiretls: bool,
) -> Result<String, String> {
    let begin = sc::Begin {
        client: sc::Client {
            name: "localhost".into(),
            proto: "local".into(),
            ..Default::default()
        },
        sender: sender.to_string(),
        ret: 0,
        envid: String::new(),
        smtputf8: false,
        body_8bit: true,
        trace: false,
        remote_headers: false,
        milter_ticket: 0,
        signable: true,
        requiretls,
    };
    let rcpt = [sc::Recipient {
        address: to.to_string(),
        orcpt: String::new(),
        notify: postern_proto::queue::notify::NEVER,
    }];
    crate::submit::to_cleanup(sb, query, query, begin, &rcpt, msg, |_| {})
        .await
        .map_err(|e| e.to_string())
}
