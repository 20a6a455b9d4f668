//! pickup: takes mail from `sendmail`, the one place where local
//! submission permission is decided (Postfix's postdrop and pickup in one).
//!
//! Two ways in, one decoder: the public pickup socket (the submitter is
//! who SO_PEERCRED says), and files in the maildrop directory that
//! sendmail wrote while the mail system was down (the submitter is the
//! file's owner). Either way pickup reads the whole submission first, then
//! decides: `authorized_submit_users`, `local_login_sender_maps`, and the
//! smtpd sender, relay and recipient restrictions with the login name as
//! the authenticated user (L66, L854). Accepted mail goes to cleanup like
//! any other; the reply (or the file's removal) follows cleanup's commit.
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use postern_config::{Params, Role};
use postern_ipc::listener::SeqpacketListener;
use postern_ipc::sendmail_pickup::{self as sp, Begin, Reply, Request};
use postern_ipc::{Channel, ChannelError, Endpoint, Message, smtpd_cleanup as sc};
use postern_proto::header::{self, Split};

use crate::daemon::{self, Context, Switchboard};
use crate::smtpd::access::{Access, Ctx, Stage, Verdict};
use crate::tablecache::TableCache;
use crate::tables::{self, Table};
use crate::{info, warn};

/// sysexits(3), the exit codes scripts test for.
pub mod sysexits {
    pub const EX_USAGE: u8 = 64;
    pub const EX_DATAERR: u8 = 65;
    pub const EX_NOUSER: u8 = 67;
    pub const EX_SOFTWARE: u8 = 70;
    pub const EX_TEMPFAIL: u8 = 75;
    pub const EX_NOPERM: u8 = 77;
    pub const EX_CONFIG: u8 = 78;
}
use sysexits::*;

/// Most recipients one submission may name.
const MAX_RECIPIENTS: usize = 1000;
/// How often the maildrop directory is scanned (and once at start).
const SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// A submission on the socket must finish within this.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);

/// The maildrop directory: outside the queue (which only the broker may
/// touch), writable by every local user, readable by pickup alone.
pub fn maildrop_dir(params: &Params) -> PathBuf {
    Path::new(params.str("data_directory")).join("maildrop")
}

/// The public socket sendmail connects to.
pub fn socket_path(params: &Params) -> PathBuf {
    Path::new(params.str("data_directory"))
        .join("public")
        .join("pickup")
}

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Pickup, ipc_fd, |_params| Ok((serve, Vec::new())))
}

struct Settings {
    myorigin: String,
    myhostname: String,
    message_size_limit: u64,
    header_size_limit: usize,
    submit_users: Vec<String>,
    login_sender: Vec<Table>,
    sender_login: Vec<Table>,
    access: Access,
    maildrop: PathBuf,
    query: Duration,
    transfer: Duration,
}

fn table_list(p: &Params, name: &str) -> Vec<Table> {
    p.list(name)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| match tables::parse(s) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!("{name}: {e}");
                None
            }
        })
        .collect()
}

impl Settings {
    fn new(p: &Params) -> Result<Settings, String> {
        Ok(Settings {
            myorigin: p.str("myorigin").to_ascii_lowercase(),
            myhostname: p.str("myhostname").into(),
            message_size_limit: p.size("message_size_limit").unwrap_or(10_240_000),
            header_size_limit: p.size("header_size_limit").unwrap_or(102_400) as usize,
            submit_users: p.list("authorized_submit_users").unwrap_or_default(),
            login_sender: table_list(p, "local_login_sender_maps"),
            sender_login: table_list(p, "smtpd_sender_login_maps"),
            access: Access::new(p)?,
            maildrop: maildrop_dir(p),
            query: p
                .duration("ipc_query_timeout")
                .unwrap_or(Duration::from_secs(10)),
            transfer: p
                .duration("ipc_timeout")
                .unwrap_or(Duration::from_secs(3600)),
        })
    }
}

struct Shared {
    set: Settings,
    sb: Switchboard,
    tables: TableCache,
}

async fn serve(mut ctx: Context) {
    let set = match Settings::new(&ctx.params) {
        Ok(s) => s,
        Err(e) => crate::fatal!("pickup: {e}"),
    };
    let sh = Rc::new(Shared {
        set,
        sb: ctx.switchboard.clone(),
        tables: TableCache::new(ctx.switchboard.clone()),
    });
    let listener = ctx
        .listeners
        .drain(..)
        .find(|l| l.service == "pickup")
        .map(|l| SeqpacketListener::from_fd(l.fd));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            match listener {
                Some(Ok(l)) => {
                    let sh = sh.clone();
                    tokio::task::spawn_local(accept_loop(l, sh));
                }
                Some(Err(e)) => warn!("pickup socket: {e}"),
                None => warn!("no pickup socket from the master; only the maildrop is served"),
            }
            let mut warned = HashSet::new();
            loop {
                scan_maildrop(&sh, &mut warned).await;
                tokio::select! {
                    _ = tokio::time::sleep(SCAN_INTERVAL) => {}
                    _ = ctx.shutdown.changed() => return,
                }
            }
        })
        .await;
}

async fn accept_loop(l: SeqpacketListener, sh: Rc<Shared>) {
    loop {
        let (fd, cred) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("pickup socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sh = sh.clone();
        tokio::task::spawn_local(async move {
            sh.sb.connection(true);
            connection(&sh, fd, cred.uid, cred.pid).await;
            sh.sb.connection(false);
        });
    }
}

/// One submission as it arrived, before any decision.
#[derive(Default)]
struct Submission {
    begin: Begin,
    recipients: Vec<String>,
    content: Vec<u8>,
    /// More content arrived than message_size_limit allows (and was dropped).
    too_big: bool,
    too_many: bool,
}

/// Adds one request to the submission; Some(..) at End.
fn absorb(sub: &mut Option<Submission>, req: Request, limit: u64) -> Result<bool, &'static str> {
    match (req, sub.as_mut()) {
        (Request::Begin(b), None) => {
            *sub = Some(Submission {
                begin: b,
                ..Default::default()
            });
            Ok(false)
        }
        (Request::Begin(_), Some(_)) => Err("a second begin"),
        (_, None) => Err("content before begin"),
        (Request::Recipients(r), Some(s)) => {
            if s.recipients.len() + r.len() > MAX_RECIPIENTS {
                s.too_many = true;
            } else {
                s.recipients.extend(r);
            }
            Ok(false)
        }
        (Request::Content(c), Some(s)) => {
            if s.content.len() as u64 + c.len() as u64 > limit {
                s.too_big = true;
            } else if !s.too_big {
                s.content.extend_from_slice(&c);
            }
            Ok(false)
        }
        (Request::End, Some(_)) => Ok(true),
    }
}

async fn connection(sh: &Shared, fd: OwnedFd, uid: u32, pid: i32) {
    let Ok(mut ch) = Channel::new(fd, <Request as Message>::MAX_FRAME, sh.set.query) else {
        return;
    };
    // Client-reachable: a bad frame drops this connection, nothing else.
    if let Err(e) = ch.hello_server(sp::EDGE, sp::VERSION).await {
        if e.is_violation() {
            warn!("pickup socket: dropping uid {uid} pid {pid}: {e}");
        }
        return;
    }
    let mut ep = Endpoint::<Reply, Request>::from_channel(ch);
    let mut sub = None;
    let deadline = tokio::time::Instant::now() + SUBMIT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let req = match ep.recv_within(left).await {
            Ok(r) => r,
            Err(ChannelError::Closed) => return,
            Err(e) => {
                warn!("pickup socket: dropping uid {uid} pid {pid}: {e}");
                return;
            }
        };
        match absorb(&mut sub, req, sh.set.message_size_limit) {
            Ok(false) => {}
            Ok(true) => break,
            Err(why) => {
                warn!("pickup socket: dropping uid {uid} pid {pid}: protocol violation: {why}");
                return;
            }
        }
    }
    let Some(sub) = sub else { return };
    let reply = match submit(sh, uid, &sub).await {
        Ok(id) => Reply::Queued(id),
        Err(f) => Reply::Failed {
            exit_code: f.exit,
            text: f.text,
        },
    };
    let _ = ep.send(&reply).await;
}

/// Why a submission was not queued.
#[derive(Debug)]
struct Refusal {
    exit: u8,
    text: String,
}

fn refuse(exit: u8, text: impl Into<String>) -> Refusal {
    Refusal {
        exit,
        text: text.into(),
    }
}

impl Refusal {
    /// A temporary problem: a maildrop file stays for the next scan.
    fn is_temporary(&self) -> bool {
        self.exit == EX_TEMPFAIL
    }
}

/// A passwd entry: login name and the full name from GECOS.
struct User {
    name: String,
    gecos: String,
}

async fn user(sh: &Shared, uid: u32) -> Result<User, Refusal> {
    let data = sh
        .tables
        .read(Path::new("/etc/passwd"))
        .await
        .map_err(|e| refuse(EX_TEMPFAIL, format!("cannot read the user database: {e}")))?
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&data);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 5 && f[2].parse::<u32>().ok() == Some(uid) {
            return Ok(User {
                name: f[0].to_string(),
                gecos: f[4].split(',').next().unwrap_or("").to_string(),
            });
        }
    }
    Err(refuse(
        EX_NOUSER,
        format!("no login name found for user ID {uid}"),
    ))
}

/// `authorized_submit_users`: names, `!name`, `static:anyone`, or tables
/// keyed by login name; the first match decides, no match refuses. The
/// decision is the master's `user_listed`; the tables are read first,
/// through the master, since pickup's jail has no /etc.
async fn may_submit(sh: &Shared, login: &str) -> Result<bool, Refusal> {
    let list = &sh.set.submit_users;
    let mut found: Vec<(Table, Result<Option<String>, String>)> = Vec::new();
    for item in list
        .iter()
        .filter(|i| i.contains(':') && !i.starts_with('!'))
    {
        let t = tables::parse(item)
            .map_err(|e| refuse(EX_SOFTWARE, format!("authorized_submit_users: {e}")))?;
        if !matches!(t, Table::Static(_)) {
            let r = sh.tables.lookup(&t, login).await;
            found.push((t, r));
        }
    }
    tables::user_listed_with(list, login, |t| {
        found
            .iter()
            .find(|(x, _)| x == t)
            .map_or(Ok(None), |(_, r)| r.clone())
    })
    .map_err(|e| {
        refuse(
            EX_TEMPFAIL,
            format!("authorized_submit_users lookup error: {e}"),
        )
    })
}

/// `local_login_sender_maps`: the login name (then `*`) maps to the sender
/// patterns it may use: `*`, `<>`, `@domain`, or whole addresses.
async fn may_use_sender(sh: &Shared, login: &str, sender: &str) -> Result<bool, Refusal> {
    if sh.set.login_sender.is_empty() {
        return Ok(true);
    }
    let mut value = None;
    for key in [login, "*"] {
        match sh.tables.lookup_any(&sh.set.login_sender, key).await {
            Ok(Some(v)) => {
                value = Some(v);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                return Err(refuse(
                    EX_TEMPFAIL,
                    format!("local_login_sender_maps lookup error: {e}"),
                ));
            }
        }
    }
    let Some(v) = value else { return Ok(false) };
    let sender = sender.to_ascii_lowercase();
    Ok(v.split([',', ' ', '\t'])
        .filter(|p| !p.is_empty())
        .any(|p| {
            let p = p.to_ascii_lowercase();
            p == "*"
                || (p == "<>" && sender.is_empty())
                || (p.starts_with('@') && !sender.is_empty() && sender.ends_with(&p))
                || p == sender
        }))
}

/// Qualifies a bare local part with `@myorigin`, as Postfix does for
/// local submissions; checks the result as an SMTP path would be.
fn qualify(sh: &Shared, addr: &str, utf8: bool) -> Result<String, String> {
    let a = addr.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a);
    if a.is_empty() {
        return Ok(String::new());
    }
    let full = if a.contains('@') {
        a.to_string()
    } else {
        format!("{a}@{}", sh.set.myorigin)
    };
    postern_proto::address::parse_path(&full, utf8)
        .map(|m| m.address())
        .map_err(|e| format!("<{a}>: {e}"))
}

/// The addresses in To, Cc and Bcc (or Resent-To/Cc/Bcc when the message
/// has any Resent- header, as RFC 5322 section 3.6.6 intends).
fn header_recipients(headers: &[u8]) -> Vec<String> {
    let Some(msg) = mail_parser::MessageParser::new().parse_headers(headers) else {
        return Vec::new();
    };
    let fields = header::fields(headers);
    let resent = fields
        .iter()
        .any(|f| f.name.len() > 7 && f.name[..7].eq_ignore_ascii_case("resent-"));
    let mut out = Vec::new();
    let wanted: &[&str] = if resent {
        &["Resent-To", "Resent-Cc", "Resent-Bcc"]
    } else {
        &["To", "Cc", "Bcc"]
    };
    for h in msg.headers() {
        if !wanted.iter().any(|w| h.name().eq_ignore_ascii_case(w)) {
            continue;
        }
        if let Some(list) = h.value().as_address() {
            // A bare word (`To: root`) parses as a name: it is an
            // unqualified local address, as sendmail has always read it.
            out.extend(list.iter().filter_map(|a| match (a.address(), a.name()) {
                (Some(addr), _) => Some(addr.to_string()),
                (None, Some(n)) if !n.contains(char::is_whitespace) && !n.is_empty() => {
                    Some(n.to_string())
                }
                _ => None,
            }));
        }
    }
    out
}

/// The message as it will be queued: Bcc removed under -t, a From header
/// added when there is none.
fn rewrite(sub: &Submission, sender: &str, full_name: &str) -> Vec<u8> {
    let buf = &sub.content;
    let (hdr_end, body_start) = match header::split(buf, true) {
        Split::Done { headers, body } => (headers, body),
        Split::Incomplete => (buf.len(), buf.len()),
    };
    let fields = header::fields(&buf[..hdr_end]);
    let mut out = Vec::with_capacity(buf.len() + 128);
    let mut have_from = false;
    for f in &fields {
        if sub.begin.extract && (f.is("Bcc") || f.is("Resent-Bcc")) {
            continue;
        }
        have_from |= f.is("From");
        out.extend_from_slice(&f.raw);
        if !f.raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !have_from && !sender.is_empty() {
        let line = if full_name.is_empty() {
            format!("From: {sender}\r\n")
        } else {
            format!("From: {} <{sender}>\r\n", phrase(full_name))
        };
        out.extend_from_slice(line.as_bytes());
    }
    if body_start == hdr_end && hdr_end < buf.len() {
        // The body began with a non-header line: keep it a body.
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&buf[hdr_end..]);
    out
}

/// A display name, quoted when it holds anything but atoms and spaces.
fn phrase(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Decides and, when allowed, queues one submission. Returns the queue id.
async fn submit(sh: &Shared, uid: u32, sub: &Submission) -> Result<String, Refusal> {
    let user = user(sh, uid).await?;
    let login = user.name.as_str();
    if !may_submit(sh, login).await? {
        warn!("uid={uid}: User {login}({uid}) is not allowed to submit mail");
        return Err(refuse(
            EX_NOPERM,
            format!("User {login}({uid}) is not allowed to submit mail"),
        ));
    }
    if sub.too_big {
        return Err(refuse(EX_DATAERR, "Message file too big"));
    }
    if sub.too_many {
        return Err(refuse(EX_DATAERR, "Too many recipients"));
    }
    let b = &sub.begin;
    let utf8 = b.smtputf8;
    let sender = if b.sender_given {
        qualify(sh, &b.sender, utf8)
            .map_err(|e| refuse(EX_DATAERR, format!("bad sender address {e}")))?
    } else {
        qualify(sh, login, utf8)
            .map_err(|e| refuse(EX_DATAERR, format!("bad sender address {e}")))?
    };
    if !may_use_sender(sh, login, &sender).await? {
        warn!("uid={uid}: User {login}({uid}) is not allowed to use sender address <{sender}>");
        return Err(refuse(
            EX_NOPERM,
            format!("User {login}({uid}) is not allowed to use sender address <{sender}>"),
        ));
    }
    let mut rcpts = Vec::new();
    for r in &sub.recipients {
        rcpts.push(
            qualify(sh, r, utf8)
                .map_err(|e| refuse(EX_DATAERR, format!("bad recipient address {e}")))?,
        );
    }
    if b.extract {
        let hdr_end = match header::split(&sub.content, true) {
            Split::Done { headers, .. } => headers,
            Split::Incomplete => sub.content.len(),
        };
        if hdr_end > sh.set.header_size_limit {
            return Err(refuse(EX_DATAERR, "Message header size exceeds limit"));
        }
        for a in header_recipients(&sub.content[..hdr_end]) {
            match qualify(sh, &a, true) {
                Ok(q) if !q.is_empty() => rcpts.push(q),
                Ok(_) => {}
                Err(e) => warn!("uid={uid}: ignoring bad header recipient {e}"),
            }
        }
    }
    let mut seen = HashSet::new();
    rcpts.retain(|r| seen.insert(r.to_ascii_lowercase()));
    if rcpts.is_empty() {
        return Err(refuse(
            EX_USAGE,
            if b.extract {
                "No recipient addresses found in message header"
            } else {
                "Recipient addresses must be specified on the command line or via the -t option"
            },
        ));
    }
    if rcpts.len() > MAX_RECIPIENTS {
        return Err(refuse(EX_DATAERR, "Too many recipients"));
    }
    check_restrictions(sh, uid, login, &sender, &rcpts).await?;
    let full_name = if b.full_name.is_empty() {
        user.gecos.as_str()
    } else {
        b.full_name.as_str()
    };
    let content = rewrite(sub, &sender, full_name);
    let smtputf8 = utf8 || !sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
    let begin = sc::Begin {
        client: local_client(Some(uid)),
        sender: sender.clone(),
        ret: b.ret,
        envid: b.envid.clone(),
        smtputf8,
        body_8bit: b.body_8bit || content.iter().any(|&c| c >= 0x80),
        trace: b.trace,
    };
    let list: Vec<sc::Recipient> = rcpts
        .iter()
        .map(|r| sc::Recipient {
            address: r.clone(),
            orcpt: String::new(),
            notify: b.notify,
        })
        .collect();
    match crate::submit::to_cleanup(
        &sh.sb,
        sh.set.query,
        sh.set.transfer,
        begin,
        &list,
        &content,
        |id| {
            info!("{id}: uid={uid} from=<{sender}>");
        },
    )
    .await
    {
        Ok(id) => Ok(id),
        Err(crate::submit::Error::Refused(f)) => Err(refuse(
            if f.code >= 500 {
                EX_DATAERR
            } else {
                EX_TEMPFAIL
            },
            format!("{} {} {}", f.code, f.enhanced, f.text),
        )),
        Err(crate::submit::Error::Broken(e)) => {
            warn!("uid={uid}: cannot queue: {e}");
            Err(refuse(EX_TEMPFAIL, "queue file write error"))
        }
    }
}

/// The "client" of mail made on this host: a local submitter (`uid`), or
/// pickup itself.
fn local_client(uid: Option<u32>) -> sc::Client {
    sc::Client {
        name: "localhost".into(),
        addr: String::new(),
        port: 0,
        helo: String::new(),
        proto: "local".into(),
        log_name: String::new(),
        tls: String::new(),
        local_uid: uid,
    }
}

/// smtpd's sender, relay and recipient restrictions, with the local user
/// as an authenticated client on the loopback address (L854).
async fn check_restrictions(
    sh: &Shared,
    uid: u32,
    login: &str,
    sender: &str,
    rcpts: &[String],
) -> Result<(), Refusal> {
    let needs_owner = sh
        .set
        .access
        .rcpt_lists()
        .iter()
        .any(|(_, l)| l.iter().any(|r| r.needs_sender_login()));
    let owners = if needs_owner && !sender.is_empty() {
        let mut found = None;
        for k in crate::smtpd::access::sender_login_keys(sender) {
            match sh.tables.lookup_any(&sh.set.sender_login, &k).await {
                Ok(Some(v)) => {
                    found = Some(crate::smtpd::access::sender_owners(&v));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(refuse(
                        EX_TEMPFAIL,
                        format!("smtpd_sender_login_maps lookup error: {e}"),
                    ));
                }
            }
        }
        found
    } else {
        None
    };
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    for rcpt in rcpts {
        let domain = rcpt
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        let ctx = Ctx {
            ip,
            client: "localhost[127.0.0.1]",
            helo: &sh.set.myhostname,
            sender,
            rcpt,
            domain: &domain,
            login: Some(login),
            sender_owners: owners.as_deref(),
        };
        for (stage, list) in sh.set.access.rcpt_lists() {
            if matches!(stage, Stage::Client | Stage::Helo) {
                continue;
            }
            // Each list decides for itself: a permit ends only that list.
            if let Verdict::Reject(code, enh, text) = sh.set.access.check(list, stage, &ctx) {
                info!("uid={uid}: reject: {code} {enh} {text}; from=<{sender}> to=<{rcpt}>");
                return Err(refuse(
                    if code >= 500 { EX_NOPERM } else { EX_TEMPFAIL },
                    format!("{code} {enh} {text}"),
                ));
            }
        }
    }
    Ok(())
}

/// Takes in every finished file in the maildrop directory. A file is
/// finished when sendmail set its owner-execute bit (Postfix's marker);
/// until then its mode is 0600 and, as root, pickup cannot even open it.
async fn scan_maildrop(sh: &Shared, warned: &mut HashSet<String>) {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, SFlag};
    let dir_path = &sh.set.maildrop;
    let dir = match nix::dir::Dir::open(
        dir_path.as_path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => {
            if warned.insert(String::new()) {
                warn!("cannot open maildrop {}: {e}", dir_path.display());
            }
            return;
        }
    };
    let names: Vec<String> = {
        let mut d = dir;
        d.iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect()
    };
    let dirfd = match std::fs::File::open(dir_path) {
        Ok(f) => OwnedFd::from(f),
        Err(_) => return,
    };
    for name in names {
        let fd = match openat(
            dirfd.as_fd(),
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Not finished yet (still 0600), or gone.
            Err(nix::errno::Errno::EACCES) | Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => {
                if warned.insert(name.clone()) {
                    warn!("maildrop/{name}: {e}; skipped");
                }
                continue;
            }
        };
        let st = match nix::sys::stat::fstat(&fd) {
            Ok(st) => st,
            Err(_) => continue,
        };
        let kind = st.st_mode & SFlag::S_IFMT.bits();
        if kind != SFlag::S_IFREG.bits() {
            if warned.insert(name.clone()) {
                warn!(
                    "maildrop/{name}: uid={}: not a regular file; skipped",
                    st.st_uid
                );
            }
            continue;
        }
        if st.st_mode & 0o100 == 0 {
            continue;
        }
        let uid = st.st_uid;
        if st.st_nlink != 1 {
            warn!(
                "maildrop/{name}: uid={uid}: has {} links; removed unread",
                st.st_nlink
            );
            remove(&dirfd, &name);
            continue;
        }
        let limit = sh.set.message_size_limit + 2 * 1024 * 1024;
        if st.st_size as u64 > limit {
            warn!(
                "maildrop/{name}: uid={uid}: {} bytes exceed message_size_limit; removed",
                st.st_size
            );
            remove(&dirfd, &name);
            continue;
        }
        let data = match crate::fsutil::read_whole(&std::fs::File::from(fd), limit) {
            Ok(d) => d,
            Err(e) => {
                warn!("maildrop/{name}: {e}");
                continue;
            }
        };
        let sub = match parse_file(&data, sh.set.message_size_limit) {
            Ok(s) => s,
            Err(why) => {
                warn!("maildrop/{name}: uid={uid}: malformed submission ({why}); removed");
                remove(&dirfd, &name);
                continue;
            }
        };
        match submit(sh, uid, &sub).await {
            Ok(id) => {
                info!("{id}: taken from maildrop/{name}");
                remove(&dirfd, &name);
            }
            Err(r) if r.is_temporary() => {
                warn!("maildrop/{name}: uid={uid}: {}; will try again", r.text);
            }
            Err(r) => {
                warn!("maildrop/{name}: uid={uid}: refused: {}; removed", r.text);
                // sendmail exited 0 long ago: the submitter learns of the
                // refusal by mail, with the message, before the file goes.
                return_refused(sh, uid, &sub, &r.text).await;
                remove(&dirfd, &name);
            }
        }
    }
}

/// How much of a refused message goes back to its submitter (Postfix's
/// bounce_size_limit default).
const RETURN_LIMIT: usize = 50_000;

/// Mails a refused maildrop submission back to the local user who wrote it,
/// from the null sender (so the notice itself can never bounce).
async fn return_refused(sh: &Shared, uid: u32, sub: &Submission, why: &str) {
    let Ok(user) = user(sh, uid).await else {
        warn!("uid={uid}: no login name: the refusal is only in this log");
        return;
    };
    let Ok(to) = qualify(sh, &user.name, false) else {
        return;
    };
    let host = &sh.set.myhostname;
    let mut text = format!(
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\r\n\
         To: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         This is the mail system at host {host}.\r\n\
         \r\n\
         A message you submitted with sendmail while the mail system was\r\n\
         down could not be accepted when the mail system started:\r\n\
         \r\n    {why}\r\n\
         \r\n\
         The message is returned below.\r\n\
         \r\n\
         --- returned message ---\r\n"
    )
    .into_bytes();
    let mut body = &sub.content[..sub.content.len().min(RETURN_LIMIT)];
    if body.len() < sub.content.len()
        && let Some(nl) = body.iter().rposition(|&c| c == b'\n')
    {
        body = &body[..=nl];
    }
    text.extend_from_slice(body);
    if !text.ends_with(b"\r\n") {
        text.extend_from_slice(b"\r\n");
    }
    let begin = sc::Begin {
        client: local_client(None),
        sender: String::new(),
        ret: 0,
        envid: String::new(),
        smtputf8: !to.is_ascii(),
        body_8bit: text.iter().any(|&c| c >= 0x80),
        trace: false,
    };
    let rcpt = [sc::Recipient {
        address: to.clone(),
        orcpt: String::new(),
        notify: 0,
    }];
    match crate::submit::to_cleanup(
        &sh.sb,
        sh.set.query,
        sh.set.transfer,
        begin,
        &rcpt,
        &text,
        |_| {},
    )
    .await
    {
        Ok(id) => info!("{id}: uid={uid}: refused maildrop submission returned to <{to}>"),
        Err(e) => warn!("uid={uid}: cannot return the refused submission to <{to}>: {e}"),
    }
}

fn remove(dirfd: &OwnedFd, name: &str) {
    if let Err(e) =
        nix::unistd::unlinkat(dirfd.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
    {
        warn!("cannot remove maildrop/{name}: {e}");
    }
}

/// A maildrop file: the socket's frames, one after another, ending with End.
fn parse_file(data: &[u8], limit: u64) -> Result<Submission, String> {
    let mut sub = None;
    for f in sp::file_frames(data) {
        let f = f.map_err(|e| e.to_string())?;
        let req = Request::decode(f, Vec::new()).map_err(|e| e.to_string())?;
        if absorb(&mut sub, req, limit).map_err(str::to_string)? {
            return sub.ok_or_else(|| "no begin".to_string());
        }
    }
    Err("truncated (no end)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(reqs: &[Request]) -> Vec<u8> {
        reqs.iter().flat_map(|r| r.encode()).collect()
    }

    #[test]
    fn maildrop_files_parse_and_refuse_garbage() {
        let good = frames(&[
            Request::Begin(Begin::default()),
            Request::Recipients(vec!["a@b.example".into()]),
            Request::Content(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
            Request::End,
        ]);
        let s = parse_file(&good, 1000).unwrap();
        assert_eq!(s.recipients, vec!["a@b.example"]);
        assert!(!s.too_big);
        assert!(parse_file(&good[..good.len() - 3], 1000).is_err());
        assert!(parse_file(&good, 5).unwrap().too_big);
        assert!(parse_file(b"\xff\xff\xff\xffjunk", 1000).is_err());
        let no_begin = frames(&[Request::Content(b"x".to_vec()), Request::End]);
        assert!(parse_file(&no_begin, 1000).is_err());
        let twice = frames(&[
            Request::Begin(Begin::default()),
            Request::Begin(Begin::default()),
        ]);
        assert!(parse_file(&twice, 1000).is_err());
    }

    #[test]
    fn header_recipients_follow_rfc5322() {
        let h = b"To: \"Doe, J\" <j@x.example>, k@y.example, root\r\nCc: group: a@g.example, b@g.example;\r\nBcc: (c) hidden@z.example\r\nSubject: To: no@no.example\r\n\r\n";
        let mut r = header_recipients(h);
        r.sort();
        assert_eq!(
            r,
            vec![
                "a@g.example",
                "b@g.example",
                "hidden@z.example",
                "j@x.example",
                "k@y.example",
                "root"
            ]
        );
        let resent = b"To: old@x.example\r\nResent-To: new@x.example\r\n\r\n";
        assert_eq!(header_recipients(resent), vec!["new@x.example"]);
    }

    #[test]
    fn display_names_are_quoted_when_needed() {
        assert_eq!(phrase("Cron Daemon"), "Cron Daemon");
        assert_eq!(phrase("Doe, John"), "\"Doe, John\"");
        assert_eq!(phrase("a\"b"), "\"a\\\"b\"");
    }
}
