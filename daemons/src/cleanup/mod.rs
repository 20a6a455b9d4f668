//! cleanup: turns a transaction from smtpd into a queue file.
//!
//! The broker hands it the queue id and an open file; cleanup writes the
//! envelope records, the message (with its own Received header, a
//! Message-ID and Date when they are missing, and any Return-Path removed),
//! and the end-of-content record. At the end of the content the broker
//! checks the file, appends the commit record and makes it all durable
//! with one sync. Every record carries a checksum, so a crash during that
//! sync leaves either the whole message with its commit record or a file
//! that recovery treats as never committed.
use std::cell::Cell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use postern_config::{Params, Role};
use postern_ipc::smtpd_cleanup::{Begin, Failure, Recipient, Reply, Request};
use postern_ipc::{ChannelError, Endpoint, cleanup_broker as cb, smtpd_cleanup as sc};
use postern_proto::header::{self, Split};
use postern_proto::queue::{self as rec, Record};

use crate::daemon::{self, Context, Switchboard};
use crate::{clock, log, warn};

mod authres;
mod checks;
mod inspect;
mod milter;
mod received;
mod recipients;
mod rewrite;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Cleanup, ipc_fd, |_params| Ok((serve, Vec::new())))
}

struct Settings {
    myhostname: String,
    mail_name: String,
    header_size_limit: usize,
    message_size_limit: u64,
    hopcount_limit: usize,
    query: Duration,
    transfer: Duration,
    /// header_checks, mime_header_checks, nested_header_checks, body_checks.
    checks: checks::ContentChecks,
    /// canonical, masquerade, automatic BCC, virtual aliases.
    rewrite: rewrite::Rewriting,
    tables: crate::tablecache::TableCache,
    /// The entries of smtpd_milters and non_smtpd_milters.
    milters: [Vec<String>; 2],
    /// authentication_checks, and the resolver they ask.
    authres: Option<(authres::Settings, crate::smtp::ResolverClient)>,
    /// dkim_signing_table is set: a message from a trusted source gets a
    /// `Signable` record (without it, files stay version 1).
    dkim: bool,
    /// requiretls_esmtp_header: a REQUIRETLS message gets
    /// `Require-TLS-ESMTP: yes`, which carries the request through content
    /// filters (and forwards).
    requiretls_header: bool,
}

impl Settings {
    fn new(p: &Params, sb: Switchboard) -> Settings {
        Settings {
            requiretls_header: p.bool("requiretls_esmtp_header").unwrap_or(true),
            checks: checks::ContentChecks::new(p),
            rewrite: rewrite::Rewriting::new(p),
            authres: authres::Settings::new(p).map(|a| {
                let timeout = p
                    .duration("ipc_query_timeout")
                    .unwrap_or(Duration::from_secs(10));
                (a, crate::smtp::ResolverClient::new(sb.clone(), timeout))
            }),
            tables: crate::tablecache::TableCache::new(sb),
            dkim: !p.list("dkim_signing_table").unwrap_or_default().is_empty(),
            milters: [
                postern_config::milter::Class::Smtpd,
                postern_config::milter::Class::NonSmtpd,
            ]
            .map(|c| {
                p.list(c.param())
                    .unwrap_or_default()
                    .iter()
                    .map(|e| e.trim().to_string())
                    .collect()
            }),
            myhostname: p.str("myhostname").into(),
            mail_name: p.str("mail_name").into(),
            header_size_limit: p.size("header_size_limit").unwrap_or(102_400) as usize,
            message_size_limit: p.size("message_size_limit").unwrap_or(10_240_000),
            hopcount_limit: p.int("hopcount_limit").unwrap_or(50) as usize,
            query: p
                .duration("ipc_query_timeout")
                .unwrap_or(Duration::from_secs(10)),
            transfer: p
                .duration("ipc_timeout")
                .unwrap_or(Duration::from_secs(3600)),
        }
    }
}

async fn serve(mut ctx: Context) {
    let settings = Rc::new(Settings::new(&ctx.params, ctx.switchboard.clone()));
    let active = Rc::new(Cell::new(0usize));
    let local = tokio::task::LocalSet::new();
    let sb = ctx.switchboard.clone();
    local
        .run_until(async move {
            loop {
                tokio::select! {
                    p = ctx.inbound.recv() => match p {
                        Some((from, fd)) => {
                            let (s, sb, a) = (settings.clone(), sb.clone(), active.clone());
                            a.set(a.get() + 1);
                            tokio::task::spawn_local(async move {
                                session(from, fd, s, sb).await;
                                a.set(a.get() - 1);
                            });
                        }
                        None => return,
                    },
                    _ = ctx.shutdown.changed() => break,
                }
            }
            // Draining: let transactions in progress finish.
            while active.get() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
}

fn fail(code: u16, enhanced: &str, text: &str) -> Failure {
    Failure {
        code,
        enhanced: enhanced.into(),
        text: text.into(),
    }
}

fn write_error() -> Failure {
    fail(451, "4.3.0", "Error: queue file write error")
}

/// smtpd broke the protocol: the channel is dropped (and an open
/// transaction aborted, as when smtpd goes away); cleanup goes on.
fn dropped(from: Role, e: impl std::fmt::Display) {
    warn!("protocol violation from {from}: {e}; channel dropped");
    crate::metrics::inc(&crate::metrics::catalog::VIOLATIONS, &[sc::EDGE]);
}

type BrokerEp = Endpoint<cb::Request, cb::Reply>;

async fn broker(sb: &Switchboard, s: &Settings) -> Result<BrokerEp, String> {
    crate::edges::open::<cb::Link>(sb, Role::Broker, s.query).await
}

async fn session(from: Role, fd: OwnedFd, s: Rc<Settings>, sb: Switchboard) {
    let Some(mut ep) = crate::edges::accept::<sc::Link>(Role::Cleanup, from, fd, s.transfer).await
    else {
        return;
    };
    let mut br: Option<BrokerEp> = None;
    let mut mil: Option<milter::MilterEp> = None;
    let mut txn: Option<Txn> = None;
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Violation(v)) => {
                dropped(from, v);
                break;
            }
            Err(_) => break,
        };
        let reply = match (req, txn.as_mut()) {
            (Request::Begin(b), None) => {
                if br.is_none() {
                    match broker(&sb, &s).await {
                        Ok(e) => br = Some(e),
                        Err(e) => {
                            warn!("cannot reach the broker: {e}");
                            send(&mut ep, Reply::Failed(write_error())).await;
                            continue;
                        }
                    }
                }
                match br
                    .as_mut()
                    .expect("connected")
                    .call(&cb::Request::Allocate)
                    .await
                {
                    Ok(cb::Reply::Allocated(id, fd)) => {
                        let started = match envelope_sender(&s, &id, b, from).await {
                            Ok((b, bcc)) => Txn::start(id.clone(), fd, b, &s)
                                .map(|t| t.with_bcc(bcc, from))
                                .map_err(|e| {
                                    warn!("{id}: cannot write the queue file: {e}");
                                    write_error()
                                }),
                            Err(f) => Err(f),
                        };
                        match started {
                            Ok(t) => {
                                txn = Some(t);
                                Reply::Begun(id)
                            }
                            Err(f) => {
                                abort(&mut br, &id).await;
                                Reply::Failed(f)
                            }
                        }
                    }
                    Ok(cb::Reply::NoSpace(free)) => {
                        warn!(
                            "not enough free space in mail queue: {free} bytes; from=<{}> client={}[{}]",
                            b.sender, b.client.name, b.client.addr
                        );
                        Reply::Failed(fail(452, "4.3.1", "Insufficient system storage"))
                    }
                    Ok(cb::Reply::Failed(e)) => {
                        warn!("broker cannot allocate a queue file: {e}");
                        Reply::Failed(write_error())
                    }
                    Ok(other) => {
                        warn!(
                            "protocol violation from broker: {other:?} in answer to allocate; channel dropped"
                        );
                        br = None;
                        Reply::Failed(write_error())
                    }
                    Err(e) => {
                        warn!("broker channel: {e}");
                        br = None;
                        Reply::Failed(write_error())
                    }
                }
            }
            (Request::Recipients(list), Some(t)) => {
                t.recipients(list);
                continue;
            }
            (Request::Effects(e), Some(t)) if matches!(from, Role::Smtpd | Role::Pickup) => {
                t.effects(e);
                continue;
            }
            (Request::Content(chunk), Some(t)) => {
                t.content(&chunk, &s).await;
                continue;
            }
            (Request::End, Some(t)) => match t.finish(&s, &sb, &mut mil, from).await {
                // header_checks or body_checks said DISCARD: the client is
                // told the message is queued, and nothing is.
                Ok(()) if t.inspect.discard => {
                    if let Some(t) = txn.take() {
                        abort(&mut br, &t.discard()).await;
                    }
                    Reply::Committed
                }
                Err(f) => {
                    let id = txn.take().expect("txn").discard();
                    abort(&mut br, &id).await;
                    Reply::Failed(f)
                }
                Ok(()) => {
                    let c = cb::Commit {
                        queue_id: t.id.clone(),
                        sender: t.begin.sender.clone(),
                        size: t.size,
                        nrcpt: t.nrcpt as u32,
                    };
                    let id = txn.take().expect("txn").discard();
                    match broker_call(&mut br, cb::Request::Commit(c)).await {
                        Some(cb::Reply::Committed) => Reply::Committed,
                        other => {
                            warn!("{id}: commit failed: {other:?}");
                            abort(&mut br, &id).await;
                            Reply::Failed(write_error())
                        }
                    }
                }
            },
            (Request::Abort, Some(_)) => {
                let id = txn.take().expect("txn").discard();
                abort(&mut br, &id).await;
                Reply::Aborted
            }
            (Request::Abort, None) => Reply::Aborted,
            (req, _) => {
                dropped(from, format!("unexpected {} in this state", req_name(&req)));
                break;
            }
        };
        if !send(&mut ep, reply).await {
            break;
        }
    }
    // smtpd went away: an open transaction is abandoned, never committed.
    if let Some(t) = txn {
        let id = t.discard();
        abort(&mut br, &id).await;
    }
}

/// The envelope sender as queued (canonical mapping, masquerading), and
/// the automatic BCC recipients it brings: sender_bcc_maps, and
/// always_bcc, for mail from smtpd and sendmail only (as Postfix's
/// CLEANUP_FLAG_BCC_OK).
async fn envelope_sender(
    s: &Settings,
    id: &str,
    mut b: Begin,
    from: Role,
) -> Result<(Begin, Vec<String>), Failure> {
    let rw = &s.rewrite;
    b.sender = rw
        .address(&s.tables, id, rewrite::Kind::Sender, false, &b.sender)
        .await?;
    let mut bcc = Vec::new();
    if matches!(from, Role::Smtpd | Role::Pickup) {
        if let Some(a) = rw
            .bcc(&s.tables, id, rewrite::Kind::Sender, &b.sender)
            .await?
        {
            bcc.push(a);
        }
        if let Some(a) = rw.always_bcc() {
            bcc.push(rw.site.qualify(a));
        }
    }
    Ok((b, bcc))
}

fn req_name(r: &Request) -> &'static str {
    match r {
        Request::Begin(_) => "begin",
        Request::Recipients(_) => "recipients",
        Request::Effects(_) => "effects",
        Request::Content(_) => "content",
        Request::End => "end",
        Request::Abort => "abort",
    }
}

async fn send(ep: &mut Endpoint<Reply, Request>, r: Reply) -> bool {
    ep.send(&r).await.is_ok()
}

async fn broker_call(br: &mut Option<BrokerEp>, req: cb::Request) -> Option<cb::Reply> {
    let ep = br.as_mut()?;
    match ep.call(&req).await {
        Ok(r) => Some(r),
        Err(e) => {
            warn!("broker channel: {e}");
            *br = None;
            None
        }
    }
}

async fn abort(br: &mut Option<BrokerEp>, id: &str) {
    // If the broker channel is gone, the broker aborts our ids itself.
    let _ = broker_call(br, cb::Request::Abort(id.to_string())).await;
}

/// One message being written.
struct Txn {
    id: String,
    out: BufWriter<File>,
    begin: Begin,
    nrcpt: usize,
    first_rcpt: String,
    /// The recipients, written at the end (after REDIRECT and BCC).
    rcpts: Vec<Recipient>,
    /// What content inspection decided so far.
    inspect: checks::Outcome,
    /// The body, read line by line for inspection.
    body: Option<inspect::BodyLines>,
    /// What smtpd's access tables asked for (HOLD, REDIRECT, BCC, PREPEND).
    effects: sc::Effects,
    header_buf: Vec<u8>,
    headers_done: bool,
    /// Bytes of message content written (after cleanup's edits).
    size: u64,
    /// Bytes of records written to the file.
    written: u64,
    message_id: String,
    failure: Option<Failure>,
    arrival: jiff::Zoned,
    /// Automatic BCC recipients (sender_bcc_maps, always_bcc).
    auto_bcc: Vec<String>,
    /// recipient_bcc_maps applies (mail from smtpd or sendmail).
    bcc_ok: bool,
    /// A trusted source and dkim_signing_table set: the file gets a
    /// `Signable` record.
    signable: bool,
}

const MAX_RECIPIENTS: usize = 100_000;
const CHUNK: usize = 64 * 1024;

impl Txn {
    fn start(id: String, fd: OwnedFd, begin: Begin, s: &Settings) -> std::io::Result<Txn> {
        let signable = s.dkim && begin.signable;
        let mut t = Txn {
            id,
            out: BufWriter::with_capacity(CHUNK, File::from(fd)),
            begin,
            nrcpt: 0,
            first_rcpt: String::new(),
            rcpts: Vec::new(),
            inspect: checks::Outcome::default(),
            body: None,
            effects: sc::Effects::default(),
            header_buf: Vec::new(),
            headers_done: false,
            size: 0,
            written: 0,
            message_id: String::new(),
            failure: None,
            arrival: clock::now(),
            auto_bcc: Vec::new(),
            bcc_ok: false,
            signable,
        };
        t.write_head()?;
        Ok(t)
    }

    /// The records before the content: the queue file's header, the
    /// sender, the client, and whether the message may be DKIM-signed.
    fn write_head(&mut self) -> std::io::Result<()> {
        let arrival_us = self.arrival.timestamp().as_microsecond() as u64;
        self.record(&Record::Header(rec::Header {
            // A version-1 reader (a rollback) delivers files without the
            // newer record.
            version: if self.begin.requiretls {
                rec::VERSION
            } else if self.signable {
                rec::VERSION_2
            } else {
                rec::VERSION_1
            },
            queue_id: self.id.clone(),
            arrival_us,
        }))?;
        self.record(&Record::Sender(rec::Sender {
            address: self.begin.sender.clone(),
            ret: self.begin.ret,
            envid: self.begin.envid.clone(),
            smtputf8: self.begin.smtputf8,
            body_8bit: self.begin.body_8bit,
        }))?;
        // sendmail -v, from a local submitter with a sender to report to.
        if self.begin.trace
            && self.begin.client.local_uid.is_some()
            && !self.begin.sender.is_empty()
        {
            self.record(&Record::TraceRequested)?;
        }
        let c = &self.begin.client;
        let client = Record::Client(rec::Client {
            name: c.name.clone(),
            addr: c.addr.clone(),
            helo: c.helo.clone(),
            proto: c.proto.clone(),
        });
        self.record(&client)?;
        if self.signable {
            self.record(&Record::Signable)?;
        }
        if self.begin.requiretls {
            self.record(&Record::RequireTls)?;
        }
        Ok(())
    }

    /// Ends the transaction's use of the queue file without writing another
    /// byte: buffered records are thrown away, not flushed, so nothing can
    /// land in the file after the broker has taken it back.
    fn discard(self) -> String {
        let (_file, _unwritten) = self.out.into_parts();
        self.id
    }

    fn record(&mut self, r: &Record) -> std::io::Result<()> {
        let b = rec::encode(r);
        self.written += b.len() as u64;
        self.out.write_all(&b)
    }

    fn io_failure(&mut self, e: std::io::Error) {
        if self.failure.is_none() {
            warn!("{}: queue file write error: {e}", self.id);
            self.failure = Some(write_error());
        }
    }

    /// A queue-file error that ends the transaction now: logged once, and
    /// the reply the client gets (the first failure recorded, if any).
    fn io_error(&mut self, e: std::io::Error) -> Failure {
        self.io_failure(e);
        self.failure.take().unwrap_or_else(write_error)
    }

    fn recipients(&mut self, list: Vec<Recipient>) {
        for r in list {
            if self.nrcpt >= MAX_RECIPIENTS {
                self.failure
                    .get_or_insert(fail(452, "4.5.3", "Error: too many recipients"));
                return;
            }
            if self.nrcpt == 0 {
                self.first_rcpt = r.address.clone();
            }
            self.nrcpt += 1;
            self.rcpts.push(r);
        }
    }

    /// Merges smtpd's access-table actions (sent before the recipients,
    /// and again before the end).
    fn effects(&mut self, e: sc::Effects) {
        self.effects.hold |= e.hold;
        if !e.redirect.is_empty() {
            self.effects.redirect = e.redirect;
        }
        for b in e.bcc {
            if !self.effects.bcc.contains(&b) && self.effects.bcc.len() < sc::MAX_EFFECTS {
                self.effects.bcc.push(b);
            }
        }
        if !e.prepend.is_empty() && self.headers_done {
            warn!(
                "{}: PREPEND after the message headers were written: ignored",
                self.id
            );
            return;
        }
        for h in e.prepend {
            if self.effects.prepend.len() < sc::MAX_EFFECTS {
                self.effects.prepend.push(h);
            }
        }
    }

    fn with_bcc(mut self, bcc: Vec<String>, from: Role) -> Txn {
        self.auto_bcc = bcc;
        self.bcc_ok = matches!(from, Role::Smtpd | Role::Pickup);
        self
    }

    fn write_recipients(&mut self, list: Vec<Recipient>) -> std::io::Result<()> {
        self.nrcpt = list.len();
        for r in list {
            self.record(&Record::Recipient(rec::Recipient {
                address: r.address,
                orcpt: r.orcpt,
                notify: r.notify,
            }))?;
        }
        if self.effects.hold {
            self.record(&Record::Hold(true))?;
        }
        Ok(())
    }

    fn write_content(&mut self, data: &[u8]) {
        for piece in data.chunks(CHUNK) {
            self.size += piece.len() as u64;
            if let Err(e) = self.record(&Record::Content(piece.to_vec())) {
                self.io_failure(e);
                return;
            }
        }
    }

    async fn content(&mut self, chunk: &[u8], s: &Settings) {
        if self.failure.is_some() {
            return;
        }
        if self.size + self.header_buf.len() as u64 + chunk.len() as u64
            > s.message_size_limit + CHUNK as u64
        {
            self.failure = Some(fail(552, "5.3.4", "Error: message file too big"));
            return;
        }
        if self.headers_done {
            self.body_bytes(chunk, s).await;
            return;
        }
        self.header_buf.extend_from_slice(chunk);
        self.try_headers(false, s).await;
    }

    async fn try_headers(&mut self, eof: bool, s: &Settings) {
        match header::split(&self.header_buf, eof) {
            Split::Incomplete => {
                if self.header_buf.len() > s.header_size_limit {
                    self.failure = Some(fail(
                        552,
                        "5.3.4",
                        "Error: message header size exceeds limit",
                    ));
                }
            }
            Split::Done { headers, body } => {
                if headers > s.header_size_limit {
                    self.failure = Some(fail(
                        552,
                        "5.3.4",
                        "Error: message header size exceeds limit",
                    ));
                    return;
                }
                let buf = std::mem::take(&mut self.header_buf);
                let fields = header::fields(&buf[..headers]);
                if fields.iter().filter(|f| f.is("Received")).count() >= s.hopcount_limit {
                    self.failure = Some(fail(554, "5.4.0", "Error: too many hops"));
                    return;
                }
                // PREPEND headers go first, above the Received header, as
                // Postfix's smtpd writes them.
                let mut out = Vec::new();
                for h in &self.effects.prepend {
                    out.extend_from_slice(h.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(self.received(s).as_bytes());
                let mut have_id = false;
                let mut have_date = false;
                for f in &fields {
                    if f.is("Return-Path") {
                        continue;
                    }
                    if f.is("Message-ID") {
                        have_id = true;
                        self.message_id = f.value();
                    }
                    have_date |= f.is("Date");
                    let rewritten = match s
                        .rewrite
                        .header(&s.tables, &self.id, self.begin.remote_headers, f)
                        .await
                    {
                        Ok(r) => r,
                        Err(fail) => {
                            self.failure = Some(fail);
                            return;
                        }
                    };
                    self.inspect_field(f, rewritten, s, &mut out).await;
                }
                if !have_id {
                    self.message_id = format!(
                        "<{}.{}@{}>",
                        self.arrival.strftime("%Y%m%d%H%M%S"),
                        self.id,
                        s.myhostname
                    );
                    out.extend_from_slice(
                        format!("Message-Id: {}\r\n", self.message_id).as_bytes(),
                    );
                }
                if !have_date {
                    out.extend_from_slice(format!("Date: {}\r\n", clock::rfc5322()).as_bytes());
                }
                if self.begin.requiretls
                    && s.requiretls_header
                    && !fields.iter().any(|f| f.is("Require-TLS-ESMTP"))
                {
                    out.extend_from_slice(b"Require-TLS-ESMTP: yes\r\n");
                }
                // The body starts with a non-header line and no blank line: add one.
                if body == headers && headers < buf.len() {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(&buf[headers..body.max(headers)]);
                log::line_as(
                    Some(&self.begin.client.log_name)
                        .filter(|n| !n.is_empty())
                        .map(|n| n.as_str()),
                    &format!("{}: message-id={}", self.id, self.message_id),
                );
                self.headers_done = true;
                self.write_content(&out);
                let content_type = fields
                    .iter()
                    .find(|f| f.is("Content-Type"))
                    .map(|f| f.value().into_bytes());
                self.start_body(content_type.as_deref(), s);
                self.body_bytes(&buf[body.max(headers)..], s).await;
            }
        }
    }

    /// Ends the content: the header section if it never ended, then the
    /// end-of-content record, then everything flushed to the file.
    async fn finish(
        &mut self,
        s: &Settings,
        sb: &Switchboard,
        mil: &mut Option<milter::MilterEp>,
        from: Role,
    ) -> Result<(), Failure> {
        if self.failure.is_none() && self.nrcpt == 0 {
            self.failure = Some(fail(550, "5.1.0", "Error: no recipients specified"));
        }
        if self.failure.is_none() && !self.headers_done {
            self.try_headers(true, s).await;
        }
        if self.failure.is_none() {
            self.body_end(s).await;
        }
        self.log_inspection();
        if let Some(f) = self.failure.take().or_else(|| self.inspect.failure.take()) {
            return Err(f);
        }
        // The authentication checks, on mail from outside (an SMTP client
        // neither in mynetworks nor logged in): forgeries removed before
        // anything reads them, the verdict put on top after the Milters.
        let mut verdict = Vec::new();
        if let Some((a, dns)) = &s.authres
            && from == Role::Smtpd
            && !self.begin.signable
            && !self.inspect.discard
        {
            verdict = self.authenticate(a, dns).await?;
        }
        // Milters see the message as queued, after the content checks.
        if let Some(class) = milter::class(from)
            && !self.inspect.discard
        {
            self.milters(s, sb, mil, class).await?;
            if self.inspect.discard {
                return Ok(());
            }
        }
        self.put_on_top(verdict)?;
        // HOLD, REDIRECT and BCC from the content checks join smtpd's.
        self.effects.hold |= self.inspect.hold;
        if let Some(r) = self.inspect.redirect.take() {
            self.effects.redirect = r;
        }
        for b in std::mem::take(&mut self.inspect.bcc) {
            if !self.effects.bcc.contains(&b) {
                self.effects.bcc.push(b);
            }
        }
        let list = self.final_recipients(s).await?;
        if let Err(e) = self.write_recipients(list) {
            return Err(self.io_error(e));
        }
        let end = Record::EndOfContent {
            size: self.size,
            nrcpt: self.nrcpt as u32,
            message_id: self.message_id.clone(),
        };
        if let Err(e) = self.record(&end).and_then(|()| self.out.flush()) {
            return Err(self.io_error(e));
        }
        Ok(())
    }
}
