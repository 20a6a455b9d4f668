//! local: final delivery to Maildir, with aliases(5).
//!
//! Mail for a local user goes to `$mail_spool_directory/USER/` in Maildir
//! format (written in tmp/, fsynced, renamed into new/, the directory
//! fsynced). Aliases expand to users, to other aliases, and to remote
//! addresses (forwarded through cleanup as a new message). Expansion has a
//! hard limit: when it is exceeded the delivery is deferred whole, never
//! truncated (L715). Commands (`|cmd`) and `:include:` are not supported and
//! are refused with a clear reason. A user's `.forward` (forward_path) is
//! followed one level (`forward.rs`).
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, mkdirat};
use postern_config::{Params, Role};
use postern_ipc::deliver::{self, DeliveryResult, Status};
use postern_ipc::edge::Answer;
use postern_ipc::smtpd_cleanup as sc;
use postern_proto::queue as rec;

use crate::clock::now_us;
use crate::daemon::{self, Context, Switchboard};
use crate::tablecache::{TableCache, TableRef, table_list};
use crate::tables::Table;
use crate::{info, log, warn};

mod forward;

/// Most targets one recipient may expand to.
const EXPANSION_LIMIT: usize = 1000;
const DEPTH_LIMIT: usize = 20;

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Local, ipc_fd, |params: &Params| {
        let spool = params.str("mail_spool_directory");
        // The spool, opened before the jail: everything below happens
        // relative to this descriptor.
        let dir = open(
            spool,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("local: cannot open mail_spool_directory {spool}: {e}"))?;
        let s = Settings::new(params)?;
        let keep = vec![dir.as_raw_fd()];
        Ok((move |ctx: Context| serve(ctx, dir, s), keep))
    })
}

struct Settings {
    aliases: Vec<TableRef>,
    mydestination: Vec<String>,
    myhostname: String,
    delimiter: String,
    /// mailbox_size_limit (0: none), per delivered file.
    mailbox_size_limit: u64,
    /// home_mailbox: a Maildir path in users' homes ("": the spool).
    home_mailbox: String,
    /// forward_path: where a user's .forward may be ($home, $user,
    /// ${recipient_delimiter}, ${extension}); empty: none is read.
    forward_path: Vec<String>,
}

impl Settings {
    fn new(p: &Params) -> Result<Settings, String> {
        let aliases = table_list(p, "alias_maps");
        Ok(Settings {
            aliases,
            mydestination: p
                .list("mydestination")
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            myhostname: p.str("myhostname").into(),
            delimiter: p.str("recipient_delimiter").into(),
            mailbox_size_limit: p.size("mailbox_size_limit").map_err(|e| e.to_string())?,
            forward_path: p.list("forward_path").map_err(|e| e.to_string())?,
            home_mailbox: p.str("home_mailbox").trim().to_string(),
        })
    }
}

struct Local {
    dir: OwnedFd,
    s: Settings,
    tables: TableCache,
    sb: Switchboard,
    query: Duration,
    seq: std::cell::Cell<u64>,
}

async fn serve(mut ctx: Context, dir: OwnedFd, s: Settings) {
    let l = Rc::new(Local {
        dir,
        s,
        tables: TableCache::new(ctx.switchboard.clone()),
        sb: ctx.switchboard.clone(),
        query: ctx.query_timeout(),
        seq: std::cell::Cell::new(0),
    });
    let transfer = ctx.transfer_timeout();
    crate::daemon::serve_channels(&mut ctx, |from, fd| {
        let l = l.clone();
        async move {
            match from {
                Role::Qmgr => channel(l, fd, transfer).await,
                other => warn!("unexpected channel from {other}"),
            }
        }
    })
    .await;
}

async fn channel(l: Rc<Local>, fd: OwnedFd, timeout: Duration) {
    crate::edges::serve::<deliver::Link, _, _>(Role::Local, Role::Qmgr, fd, timeout, |req| {
        let l = l.clone();
        async move { Answer::Reply(l.deliver(req).await) }
    })
    .await;
}

/// Writes a delivered message: Return-Path and Delivered-To, then the
/// content with LF line ends (as Postfix writes Maildir files), synced.
fn write_message(
    f: std::fs::File,
    sender: &str,
    rcpt: &str,
    content: &[u8],
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(f);
    writeln!(f, "Return-Path: <{sender}>")?;
    writeln!(f, "Delivered-To: {rcpt}")?;
    let mut rest = content;
    while !rest.is_empty() {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                f.write_all(&rest[..i])?;
                f.write_all(b"\n")?;
                rest = &rest[i + 2..];
            }
            None => {
                f.write_all(rest)?;
                rest = &[];
            }
        }
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
}

/// Where an alias leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    User(String),
    /// `\user`, or a user a .forward names: the mailbox, no .forward.
    Mailbox(String),
    Remote(String),
    Unsupported(String),
}

enum ExpandError {
    Limit,
    Tempfail(String),
}

fn secs(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e6)
}

impl Local {
    async fn deliver(&self, req: deliver::Request) -> deliver::Reply {
        let start_us = now_us();
        // A probe (address verification) has no message: the recipient is
        // checked as for delivery, and nothing is written or forwarded.
        let content = match req.file.as_ref().map(read_content) {
            None => Ok(Vec::new()),
            Some(r) => r,
        };
        let content = match content {
            Ok(c) => c,
            Err(e) => {
                warn!("{}: cannot read the queue file: {e}", req.queue_id);
                let results = req
                    .recipients
                    .iter()
                    .map(|r| {
                        result(
                            r.index,
                            Status::Deferred,
                            "4.3.0",
                            "queue file read error",
                            "local",
                        )
                    })
                    .collect();
                return deliver::Reply { results };
            }
        };
        let mut results = Vec::new();
        for r in &req.recipients {
            let t0 = Instant::now();
            let (status, dsn, text, detail) = self.one(&req, &r.address, &content).await;
            let delays = format!(
                "{}/{}/0/{}",
                secs(req.active_us.saturating_sub(req.arrival_us)),
                secs(start_us.saturating_sub(req.active_us)),
                secs(t0.elapsed().as_micros() as u64)
            );
            let word = log::status_word(status, req.is_probe());
            log::line(&format!(
                "{}: to=<{}>, relay=local, delay={}, delays={delays}, dsn={dsn}, status={word} ({})",
                req.queue_id,
                r.address,
                secs(now_us().saturating_sub(req.arrival_us)),
                detail.as_deref().unwrap_or(&text)
            ));
            results.push(result(r.index, status, &dsn, &text, "local"));
        }
        deliver::Reply { results }
    }

    /// One recipient. Returns the status, DSN code, the text safe for a
    /// remote DSN, and optionally a more detailed local-only text for the
    /// log (paths and system errors stay out of DSNs, L1011).
    async fn one(
        &self,
        req: &deliver::Request,
        address: &str,
        content: &[u8],
    ) -> (Status, String, String, Option<String>) {
        let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
        if !domain.is_empty()
            && !self
                .s
                .mydestination
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return (
                Status::Bounced,
                "5.1.2".into(),
                format!("mail for {domain} is not delivered locally"),
                None,
            );
        }
        let name = local.trim_matches('"').to_ascii_lowercase();
        if delivered_to(content)
            .iter()
            .any(|d| d.eq_ignore_ascii_case(address))
        {
            return (
                Status::Bounced,
                "5.4.6".into(),
                format!("mail forwarding loop for {address}"),
                None,
            );
        }
        let targets = match self.expand(&name).await {
            Ok(t) => t,
            Err(ExpandError::Limit) => {
                return (
                    Status::Deferred,
                    "4.3.0".into(),
                    format!(
                        "alias expansion of {name} exceeds the limit of {EXPANSION_LIMIT} addresses; nothing was delivered"
                    ),
                    None,
                );
            }
            Err(ExpandError::Tempfail(e)) => {
                return (
                    Status::Deferred,
                    "4.3.0".into(),
                    "temporary alias lookup failure".into(),
                    Some(e),
                );
            }
        };
        // The users' .forward files, one level; nothing is delivered when
        // one cannot be read.
        let ext = self.extension(&name);
        let mut finals = Vec::with_capacity(targets.len());
        for t in targets {
            match t {
                Target::User(u) if !req.is_probe() && !self.s.forward_path.is_empty() => {
                    match self.dot_forward(&u, ext.as_deref()).await {
                        Ok(Some(items)) => finals.extend(items),
                        Ok(None) => finals.push(Target::Mailbox(u)),
                        Err(e) => {
                            return (
                                Status::Deferred,
                                "4.3.0".into(),
                                "temporary .forward lookup failure".into(),
                                Some(e),
                            );
                        }
                    }
                }
                other => finals.push(other),
            }
        }
        // A command, file or include is refused before anything is
        // delivered: no partial effect.
        if let Some(what) = finals.iter().find_map(|t| match t {
            Target::Unsupported(w) => Some(w.clone()),
            _ => None,
        }) {
            return (
                Status::Bounced,
                "5.3.5".into(),
                format!("{what} delivery is not supported by this system"),
                Some(format!(
                    "alias or .forward of {name}: {what} delivery is not supported by Postern"
                )),
            );
        }
        let mut remote = Vec::new();
        let mut sent = Vec::new();
        for t in finals {
            match t {
                Target::User(u) | Target::Mailbox(u) => {
                    // A probe checks the user; a delivery writes the mailbox.
                    let r = if req.is_probe() {
                        self.check_user(&u).await
                    } else {
                        self.maildir(&req.sender, &u, address, content).await
                    };
                    match r {
                        Ok(()) => sent.push(u),
                        Err(Failure::TooBig) => {
                            return (
                                Status::Bounced,
                                "5.2.2".into(),
                                "maildir delivery failed: error writing message: File too large"
                                    .into(),
                                None,
                            );
                        }
                        Err(Failure::Unknown) => {
                            return (
                                Status::Bounced,
                                "5.1.1".into(),
                                format!("unknown user: \"{u}\""),
                                None,
                            );
                        }
                        Err(Failure::Temp(detail)) => {
                            let why = if req.is_probe() {
                                "temporary user lookup failure"
                            } else {
                                "cannot write the mailbox"
                            };
                            return (Status::Deferred, "4.2.0".into(), why.into(), Some(detail));
                        }
                    }
                }
                Target::Remote(a) => remote.push(a),
                Target::Unsupported(_) => {}
            }
        }
        if !remote.is_empty() && req.is_probe() {
            return (
                Status::Sent,
                "2.0.0".into(),
                "deliverable via alias expansion".into(),
                None,
            );
        }
        if !remote.is_empty() {
            match self.forward(req, address, &remote, content).await {
                Ok(id) => {
                    return (
                        Status::Sent,
                        "2.0.0".into(),
                        format!("forwarded as {id}"),
                        None,
                    );
                }
                Err(e) => {
                    return (
                        Status::Deferred,
                        "4.3.0".into(),
                        "cannot forward the message".into(),
                        Some(e),
                    );
                }
            }
        }
        (
            Status::Sent,
            "2.0.0".into(),
            "delivered to maildir".into(),
            None,
        )
    }

    /// Expands `name` through alias_maps, recursively, within the limits.
    async fn expand(&self, name: &str) -> Result<Vec<Target>, ExpandError> {
        let mut out: Vec<Target> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack: Vec<(String, usize)> = vec![(name.to_string(), 0)];
        while let Some((n, depth)) = stack.pop() {
            if depth > DEPTH_LIMIT || out.len() + stack.len() > EXPANSION_LIMIT {
                return Err(ExpandError::Limit);
            }
            let base = match (&self.s.delimiter, n.find(|c| self.s.delimiter.contains(c))) {
                (d, Some(i)) if !d.is_empty() => n[..i].to_string(),
                _ => n.clone(),
            };
            let value = match self
                .tables
                .lookup_any(&self.s.aliases, &n)
                .await
                .map_err(ExpandError::Tempfail)?
            {
                Some(v) => Some(v),
                None if base != n => self
                    .tables
                    .lookup_any(&self.s.aliases, &base)
                    .await
                    .map_err(ExpandError::Tempfail)?,
                None => None,
            };
            let Some(value) = value else {
                out.push(Target::User(base));
                continue;
            };
            if !seen.insert(n.clone()) {
                // An alias that leads back to itself delivers to the user.
                out.push(Target::User(base));
                continue;
            }
            for item in value
                .split(',')
                .map(|i| i.trim().trim_matches('"'))
                .filter(|i| !i.is_empty())
            {
                if let Some(user) = item.strip_prefix('\\') {
                    out.push(Target::Mailbox(user.to_ascii_lowercase()));
                } else if item.starts_with('|') {
                    out.push(Target::Unsupported("command".into()));
                } else if item.starts_with(":include:") {
                    out.push(Target::Unsupported(":include:".into()));
                } else if item.starts_with('/') {
                    out.push(Target::Unsupported("file".into()));
                } else if let Some((lp, dom)) = item.rsplit_once('@') {
                    if self
                        .s
                        .mydestination
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(dom))
                    {
                        stack.push((lp.to_ascii_lowercase(), depth + 1));
                    } else {
                        out.push(Target::Remote(item.to_string()));
                    }
                } else if item.eq_ignore_ascii_case(&n) {
                    out.push(Target::User(item.to_ascii_lowercase()));
                } else {
                    stack.push((item.to_ascii_lowercase(), depth + 1));
                }
                if out.len() + stack.len() > EXPANSION_LIMIT {
                    return Err(ExpandError::Limit);
                }
            }
        }
        let mut uniq = HashSet::new();
        out.retain(|t| uniq.insert(t.clone()));
        Ok(out)
    }

    async fn user_exists(&self, user: &str) -> Result<bool, String> {
        self.tables
            .lookup(&Table::Passwd, user)
            .await
            .map(|v| v.is_some())
    }

    async fn maildir(
        &self,
        sender: &str,
        user: &str,
        rcpt: &str,
        content: &[u8],
    ) -> Result<(), Failure> {
        self.check_user(user).await?;
        // mailbox_size_limit: the file as it would be written (two
        // headers more, LF line ends).
        let written = format!("Return-Path: <{sender}>\nDelivered-To: {rcpt}\n").len()
            + content.len()
            - content.windows(2).filter(|w| *w == b"\r\n").count();
        if self.s.mailbox_size_limit > 0 && written as u64 > self.s.mailbox_size_limit {
            return Err(Failure::TooBig);
        }
        // home_mailbox: in the user's home (never root's: root's mail
        // stays in the spool).
        if !self.s.home_mailbox.is_empty()
            && let Some(home) = self.home_of(user).await.map_err(Failure::Temp)?
        {
            return self
                .write_home_maildir(&home, sender, user, rcpt, content)
                .await
                .map_err(Failure::Temp);
        }
        self.write_maildir(sender, user, rcpt, content)
            .map_err(|e| Failure::Temp(format!("maildir {user}/: {e}")))
    }

    /// Whether `user` has a mailbox here (a known user with a usable name).
    async fn check_user(&self, user: &str) -> Result<(), Failure> {
        match self.user_exists(user).await {
            Ok(true) => {}
            Ok(false) => return Err(Failure::Unknown),
            Err(e) => return Err(Failure::Temp(e)),
        }
        if user.contains(['/', '\0']) || user.starts_with('.') {
            return Err(Failure::Unknown);
        }
        Ok(())
    }

    /// A unique Maildir file name (time, pid, a counter, the host).
    fn maildir_name(&self) -> String {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = self.s.myhostname.replace(['/', ':'], "_");
        format!(
            "{}.M{}P{}Q{seq}.{host}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id()
        )
    }

    fn write_maildir(
        &self,
        sender: &str,
        user: &str,
        rcpt: &str,
        content: &[u8],
    ) -> std::io::Result<()> {
        let mode = Mode::from_bits_truncate(0o700);
        let mkdir = |name: &str| match mkdirat(self.dir.as_fd(), name, mode) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        };
        mkdir(user)?;
        for sub in ["tmp", "new", "cur"] {
            mkdir(&format!("{user}/{sub}"))?;
        }
        let name = self.maildir_name();
        let tmp = format!("{user}/tmp/{name}");
        let fd = openat(
            self.dir.as_fd(),
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )?;
        write_message(std::fs::File::from(fd), sender, rcpt, content)?;
        renameat(
            self.dir.as_fd(),
            tmp.as_str(),
            self.dir.as_fd(),
            format!("{user}/new/{name}").as_str(),
        )?;
        let newdir = openat(
            self.dir.as_fd(),
            format!("{user}/new").as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        std::fs::File::from(newdir).sync_all()
    }

    /// home_mailbox: the Maildir in the user's home. The master creates
    /// the file (owned by the user) when asked for `tmp/NAME`, and renames
    /// it into new/ when asked for `new/NAME`, once it is written and
    /// synced (master/home.rs): this role cannot open a home.
    async fn write_home_maildir(
        &self,
        home: &str,
        sender: &str,
        user: &str,
        rcpt: &str,
        content: &[u8],
    ) -> Result<(), String> {
        let name = self.maildir_name();
        let maildir = std::path::Path::new(home).join(&self.s.home_mailbox);
        let fd = match self.sb.open_table(&maildir.join("tmp").join(&name)).await {
            Ok(Some(fd)) => fd,
            Ok(None) => return Err(format!("{user}: no Maildir file was made")),
            Err(e) => return Err(e),
        };
        write_message(std::fs::File::from(fd), sender, rcpt, content)
            .map_err(|e| format!("{}: {e}", maildir.display()))?;
        self.sb
            .open_table(&maildir.join("new").join(&name))
            .await
            .map(|_| ())
    }

    /// Sends the message on to remote alias targets as a new message.
    async fn forward(
        &self,
        req: &deliver::Request,
        rcpt: &str,
        targets: &[String],
        content: &[u8],
    ) -> Result<String, String> {
        let begin = sc::Begin {
            client: sc::Client {
                name: "localhost".into(),
                proto: "local".into(),
                ..Default::default()
            },
            sender: req.sender.clone(),
            ret: req.ret,
            envid: req.envid.clone(),
            smtputf8: req.smtputf8,
            body_8bit: req.body_8bit,
            trace: false,
            remote_headers: false,
            milter_ticket: 0,
            // A forward is signed only when the original could be.
            signable: req.file.as_ref().is_some_and(signable),
            requiretls: false,
        };
        let rcpts: Vec<sc::Recipient> = targets
            .iter()
            .map(|t| sc::Recipient {
                address: t.clone(),
                orcpt: String::new(),
                notify: 0,
            })
            .collect();
        let mut body = format!("Delivered-To: {rcpt}\r\n").into_bytes();
        body.extend_from_slice(content);
        let id = crate::submit::to_cleanup(
            &self.sb,
            self.query,
            self.query,
            begin,
            &rcpts,
            &body,
            |_| {},
        )
        .await
        .map_err(|e| e.to_string())?;
        info!("{}: forwarded as {id}", req.queue_id);
        Ok(id)
    }
}

enum Failure {
    Unknown,
    Temp(String),
    /// Over mailbox_size_limit.
    TooBig,
}

fn result(index: u32, status: Status, dsn: &str, text: &str, relay: &str) -> DeliveryResult {
    DeliveryResult {
        index,
        status,
        dsn: dsn.into(),
        text: text.into(),
        relay: relay.into(),
        remote_mta: String::new(),
    }
}

/// The message content from its queue file.
pub fn read_content(fd: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let buf = crate::fsutil::read_queue_file(fd)?;
    let (records, _) = rec::decode_all(&buf);
    Ok(rec::content(&records))
}

/// Whether the queue file's message may be DKIM-signed (cleanup wrote a
/// `Signable` record for it).
fn signable(fd: &OwnedFd) -> bool {
    crate::fsutil::read_queue_file(fd).is_ok_and(|b| {
        rec::decode_all(&b)
            .0
            .iter()
            .any(|(_, r)| *r == rec::Record::Signable)
    })
}

/// The Delivered-To headers of a message (loop detection).
fn delivered_to(content: &[u8]) -> Vec<String> {
    let end = match postern_proto::header::split(content, true) {
        postern_proto::header::Split::Done { headers, .. } => headers,
        postern_proto::header::Split::Incomplete => content.len(),
    };
    postern_proto::header::fields(&content[..end])
        .into_iter()
        .filter(|f| f.is("Delivered-To"))
        .map(|f| f.value())
        .collect()
}
