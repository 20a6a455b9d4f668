//! `sendmail`, `mailq` and `newaliases`: the command line that cron, mail(1)
//! and every script on an appliance already speak, with Postfix's flags and
//! sysexits codes. This is a plain program run by any user: it decides
//! nothing. It hands the message to pickup over the public socket; while the
//! mail system is down it leaves it in the maildrop directory; and when
//! neither works it appends it to ~/dead.letter (never through a symlink)
//! and exits with EX_TEMPFAIL.
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use postern_config::{Config, Params};
use postern_ipc::sendmail_pickup::{self as sp, Begin, Reply, Request};
use postern_ipc::{Channel, Endpoint, Message};

use crate::sysexits::*;

const USAGE: &str = "usage: sendmail [-bm|-bs|-bp|-bi|-bd|-q] [-t] [-i] [-f sender] [-F name] \
[-N dsn] [-R ret] [-V envid] [-B body] [-C config] [-v] [-oX...] [recipient ...]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deliver,
    Smtp,
    Mailq,
    Newaliases,
    Flush,
    Daemon,
}

#[derive(Debug)]
struct Opts {
    mode: Mode,
    config: Option<PathBuf>,
    begin: Begin,
    ignore_dots: bool,
    verbose: u32,
    recipients: Vec<String>,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("sendmail: fatal: {msg}");
    eprintln!("{USAGE}");
    ExitCode::from(EX_USAGE)
}

fn fatal(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("sendmail: fatal: {msg}");
    ExitCode::from(code)
}

/// DSN NOTIFY keywords (-N) to the queue's bits.
fn notify_bits(v: &str) -> Result<u8, String> {
    use postern_proto::queue::notify;
    let mut bits = 0;
    for k in v.split(',').map(|k| k.trim().to_ascii_lowercase()) {
        bits |= match k.as_str() {
            "never" => notify::NEVER,
            "success" => notify::SUCCESS,
            "failure" => notify::FAILURE,
            "delay" => notify::DELAY,
            _ => return Err(format!("Invalid DSN notification keyword: {k}")),
        };
    }
    if bits & notify::NEVER != 0 && bits != notify::NEVER {
        return Err("-N never cannot be combined with other keywords".into());
    }
    Ok(bits)
}

/// Parses the command line like Postfix's sendmail (getopt with
/// "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx", -q's value optional).
fn parse(mode0: Mode, args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        mode: mode0,
        config: None,
        begin: Begin::default(),
        ignore_dots: false,
        verbose: 0,
        recipients: Vec::new(),
    };
    const WITH_ARG: &str = "ABCFLNORVXbefhopr";
    const NO_ARG: &str = "GIUcimntvx";
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            break;
        }
        if !a.starts_with('-') || a.len() == 1 {
            i -= 1;
            break;
        }
        for (pos, c) in a[1..].char_indices() {
            if c == 'q' {
                // -q alone flushes; -qINTERVAL (for -bd) is accepted.
                if o.mode == Mode::Deliver {
                    o.mode = Mode::Flush;
                }
                break;
            }
            if NO_ARG.contains(c) {
                match c {
                    't' => o.begin.extract = true,
                    'i' => o.ignore_dots = true,
                    'v' => o.verbose += 1,
                    'I' => o.mode = Mode::Newaliases,
                    // -G, -U, -c, -m, -n, -x: accepted and ignored.
                    _ => {}
                }
                continue;
            }
            if !WITH_ARG.contains(c) {
                return Err(format!("invalid option -- '{c}'"));
            }
            let rest = &a[1 + pos + c.len_utf8()..];
            let val = if !rest.is_empty() {
                rest.to_string()
            } else if i < args.len() {
                i += 1;
                args[i - 1].clone()
            } else {
                return Err(format!("option requires an argument -- '{c}'"));
            };
            match c {
                'f' | 'r' => {
                    o.begin.sender = val;
                    o.begin.sender_given = true;
                }
                'F' => o.begin.full_name = val,
                'C' => o.config = Some(PathBuf::from(val)),
                'N' => o.begin.notify = notify_bits(&val)?,
                'R' => {
                    o.begin.ret = match val.to_ascii_lowercase().as_str() {
                        "full" => 1,
                        "hdrs" => 2,
                        _ => return Err(format!("Invalid RET keyword: {val}")),
                    }
                }
                'V' => {
                    // Postfix also accepts -XV... for the envelope id.
                    o.begin.envid = val;
                }
                'B' => match val.to_ascii_uppercase().as_str() {
                    "8BITMIME" => o.begin.body_8bit = true,
                    "7BIT" => o.begin.body_8bit = false,
                    _ => return Err("-B option needs 8BITMIME or 7BIT".into()),
                },
                'b' => {
                    o.mode = match val.as_str() {
                        "m" => Mode::Deliver,
                        "s" => Mode::Smtp,
                        "p" => Mode::Mailq,
                        "i" => Mode::Newaliases,
                        "d" | "D" => Mode::Daemon,
                        _ => return Err(format!("unsupported: -b{val}")),
                    }
                }
                // -oi is -i; -oA, -om, -odb and the rest are accepted and
                // ignored, as in Postfix.
                'o' if val == "i" => o.ignore_dots = true,
                'e' if !matches!(val.as_str(), "e" | "m" | "p" | "q" | "w") => {
                    return Err(format!("invalid -e option: {val}"));
                }
                // -A, -L, -O, -X, -h, -p: accepted and ignored.
                _ => {}
            }
            break;
        }
    }
    o.recipients = args[i..].to_vec();
    Ok(o)
}

/// The instance: -C, then MAIL_CONFIG, then /etc/postern when it holds a
/// main.cf, then the embedded default. A file name means its directory, as
/// in Postfix.
fn config_dir(o: &Opts) -> Option<PathBuf> {
    let d = o
        .config
        .clone()
        .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
        .or_else(postern_config::system_config_dir)?;
    if d.is_file() {
        return d.parent().map(Path::to_path_buf);
    }
    Some(d)
}

/// Entry point for `sendmail`, `mailq` and `newaliases` (by the name it
/// was run under) and for `postern sendmail ARGS`.
pub fn main(argv0: &str, args: &[String]) -> ExitCode {
    let mode0 = match argv0 {
        "mailq" => Mode::Mailq,
        "newaliases" => Mode::Newaliases,
        _ => Mode::Deliver,
    };
    let o = match parse(mode0, args) {
        Ok(o) => o,
        Err(e) => return usage(&e),
    };
    let dir = config_dir(&o);
    let dir = dir.as_deref();
    match o.mode {
        Mode::Mailq => super::mailq(dir),
        Mode::Flush => super::queue(dir, super::queue::QueueCmd::Flush),
        Mode::Newaliases => {
            let Some((_, params)) = super::load(dir) else {
                return ExitCode::from(EX_CONFIG);
            };
            super::map::run_build(&params.list("alias_database").unwrap_or_default(), true)
        }
        Mode::Daemon => super::start(dir, false, false),
        Mode::Smtp => {
            let params = Config::load(dir).params_lenient();
            smtp_session(&o, &params)
        }
        Mode::Deliver => {
            let params = Config::load(dir).params_lenient();
            deliver(o, &params)
        }
    }
}

/// Reads the message from stdin: LF or CRLF lines become CRLF, and a line
/// with a single `.` ends it unless -i. Keeps at most `limit + 1` bytes
/// but always reads everything, so the writer never gets SIGPIPE.
fn read_message(ignore_dots: bool, limit: u64) -> std::io::Result<Vec<u8>> {
    let cap = limit.saturating_add(1) as usize;
    let mut out = Vec::new();
    let stdin = std::io::stdin();
    let mut r = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let mut l: &[u8] = &line;
        l = l.strip_suffix(b"\n").unwrap_or(l);
        l = l.strip_suffix(b"\r").unwrap_or(l);
        if !ignore_dots && l == b"." {
            // Drain the rest, unread by anyone, as sendmail does.
            std::io::copy(&mut r, &mut std::io::sink())?;
            break;
        }
        if out.len() < cap {
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
            out.truncate(cap);
        }
    }
    Ok(out)
}

/// Whatever sendmail sends: the frames of one submission.
fn frames(begin: &Begin, rcpts: &[String], content: &[u8]) -> Vec<Request> {
    let mut v = vec![Request::Begin(begin.clone())];
    for b in rcpts.chunks(sp::MAX_BATCH) {
        v.push(Request::Recipients(b.to_vec()));
    }
    for c in content.chunks(sp::MAX_CHUNK) {
        v.push(Request::Content(c.to_vec()));
    }
    v.push(Request::End);
    v
}

/// How one hand-over went.
enum Outcome {
    Queued(String),
    /// Left in the maildrop for pickup.
    Dropped(String),
    Refused(u8, String),
    /// Neither way worked; the reasons.
    Failed(String),
}

fn deliver(mut o: Opts, params: &Params) -> ExitCode {
    if o.recipients.is_empty() && !o.begin.extract {
        return usage(
            "Recipient addresses must be specified on the command line or via the -t option",
        );
    }
    let limit = params.size("message_size_limit").unwrap_or(10_240_000);
    let content = match read_message(o.ignore_dots, limit) {
        Ok(c) => c,
        Err(e) => return fatal(EX_TEMPFAIL, format!("cannot read the message: {e}")),
    };
    if content.iter().any(|&b| b >= 0x80) {
        o.begin.body_8bit = true;
    }
    if !o.begin.sender.is_ascii() || o.recipients.iter().any(|r| !r.is_ascii()) {
        o.begin.smtputf8 = true;
    }
    // -v (Postfix): mail the sender a report of the first delivery attempt.
    o.begin.trace = o.verbose > 0;
    match hand_over(&o.begin, &o.recipients, &content, params) {
        Outcome::Queued(id) => {
            if o.verbose > 0 {
                eprintln!("sendmail: queued as {id}");
            }
            ExitCode::SUCCESS
        }
        Outcome::Dropped(name) => {
            if o.verbose > 0 {
                eprintln!("sendmail: the mail system is not running; queued in maildrop as {name}");
            }
            ExitCode::SUCCESS
        }
        Outcome::Refused(code, text) => fatal(code, text),
        Outcome::Failed(why) => {
            let saved = dead_letter(&o.begin, &content);
            match saved {
                Ok(p) => fatal(
                    EX_TEMPFAIL,
                    format!("cannot queue the message ({why}); saved in {}", p.display()),
                ),
                Err(e) => fatal(
                    EX_TEMPFAIL,
                    format!("cannot queue the message ({why}), and cannot save it: {e}"),
                ),
            }
        }
    }
}

/// Socket first, maildrop second.
fn hand_over(begin: &Begin, rcpts: &[String], content: &[u8], params: &Params) -> Outcome {
    let reqs = frames(begin, rcpts, content);
    let socket_err = match via_socket(&crate::paths::pickup_socket(params), &reqs) {
        Ok(Reply::Queued(id)) => return Outcome::Queued(id),
        Ok(Reply::Failed { exit_code, text }) => return Outcome::Refused(exit_code, text),
        Err(e) => e,
    };
    let dir = crate::paths::maildrop_dir(params);
    match via_maildrop(&dir, &reqs) {
        Ok(name) => Outcome::Dropped(name),
        Err(e) => Outcome::Failed(format!(
            "pickup: {socket_err}; maildrop {}: {e}",
            dir.display()
        )),
    }
}

fn via_socket(path: &Path, reqs: &[Request]) -> Result<Reply, String> {
    let fd = postern_ipc::listener::connect_path(path).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut ch = Channel::new(fd, <Reply as Message>::MAX_FRAME, Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        ch.hello_client(sp::EDGE, sp::VERSION)
            .await
            .map_err(|e| e.to_string())?;
        let mut ep = Endpoint::<Request, Reply>::from_channel(ch);
        for r in reqs {
            ep.send(r).await.map_err(|e| e.to_string())?;
        }
        // Queueing ends with an fsync; a busy disk can take a while.
        ep.recv_within(Duration::from_secs(600))
            .await
            .map_err(|e| e.to_string())
    })
}

/// Writes the frames to a new file in the maildrop: created 0600 (pickup
/// cannot read it yet), written, then made 0740 — owner-execute is the
/// "finished" mark, and group read lets pickup, whose group the setgid
/// directory gives every file, read it — and fsynced before we say so.
fn via_maildrop(dir: &Path, reqs: &[Request]) -> std::io::Result<String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut rnd = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut rnd)?;
    let name: String = rnd.iter().map(|b| format!("{b:02X}")).collect();
    let path = dir.join(&name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)?;
    let written = (|| {
        let mut w = std::io::BufWriter::new(&mut f);
        for r in reqs {
            w.write_all(&r.encode())?;
        }
        w.flush()?;
        drop(w);
        f.set_permissions(std::fs::Permissions::from_mode(0o740))?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(name)
}

/// Appends the message to ~/dead.letter in mbox form. O_NOFOLLOW: a symlink
/// planted there is refused, never followed; only a regular file is used.
fn dead_letter(begin: &Begin, content: &[u8]) -> Result<PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
        .ok_or("no home directory")?;
    let path = home.join("dead.letter");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(&path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                format!("{} is a symbolic link; not followed", path.display())
            } else {
                format!("{}: {e}", path.display())
            }
        })?;
    match f.metadata() {
        Ok(m) if m.is_file() => {}
        _ => return Err(format!("{} is not a regular file", path.display())),
    }
    let sender = if begin.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        begin.sender.as_str()
    };
    let mut out = format!(
        "From {sender} {}\n",
        jiff::Zoned::now().strftime("%a %b %e %H:%M:%S %Y")
    )
    .into_bytes();
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    f.write_all(&out)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// `sendmail -bs`: an SMTP session on stdin and stdout, spoken by the same
/// session core as smtpd; each message goes the same way as one from the
/// command line (pickup, or the maildrop while the mail system is down).
fn smtp_session(o: &Opts, params: &Params) -> ExitCode {
    use postern_proto::smtp::server::{
        Action, Answer, Config, Event, Peer, Server, Stages, TlsPolicy, Verdict, Want,
    };
    let num = |n: &str, d: i64| params.int(n).unwrap_or(d);
    let cfg = Config {
        myhostname: params.str("myhostname").into(),
        banner: params.str("smtpd_banner").into(),
        hard_error_limit: num("smtpd_hard_error_limit", 20) as u32,
        soft_error_limit: num("smtpd_soft_error_limit", 10) as u32,
        // The one client is the local user: no tarpit.
        error_sleep: std::time::Duration::ZERO,
        junk_limit: num("smtpd_junk_command_limit", 100) as u32,
        recipient_limit: num("smtpd_recipient_limit", 1000) as usize,
        message_size_limit: params.size("message_size_limit").unwrap_or(10_240_000),
        line_length_limit: num("line_length_limit", 2048) as usize,
        disable_vrfy: false,
        helo_required: false,
        tls: TlsPolicy::None,
        wrapper: false,
        sasl_enable: false,
        tls_auth_only: true,
        auth_without_tls: false,
        auth_with_tls: false,
        chunking: false,
        requiretls: false,
        content_chunk: 64 * 1024,
        // pickup applies the submission checks when the message arrives.
        checks: Stages::default(),
        soft_bounce: false,
        strict_rfc821: false,
    };
    let peer = Peer {
        name: "localhost".into(),
        addr: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port: 0,
    };
    let mut core = Server::start(std::sync::Arc::new(cfg), peer, true, false);
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut txn: Option<(Begin, Vec<String>, Vec<u8>)> = None;
    let mut line = Vec::new();
    loop {
        while let Some(a) = core.poll() {
            match a {
                Action::Reply(text) => {
                    let _ = out.write_all(text.as_bytes());
                }
                Action::Flush | Action::Pause(_) => {
                    let _ = out.flush();
                }
                // sendmail logs nothing of the session; pickup logs the message.
                Action::Log(_) => {}
                Action::Decide(_) => core.answer(Answer::Verdict(Verdict::Accept)),
                Action::Begin(env) => {
                    let mut b = o.begin.clone();
                    b.sender = env.sender.address();
                    b.sender_given = true;
                    b.body_8bit = env.params.body_8bit;
                    b.smtputf8 = env.params.smtputf8;
                    b.ret = env.params.ret;
                    b.envid = env.params.envid;
                    txn = Some((b, Vec::new(), Vec::new()));
                    core.answer(Answer::Begun {
                        queue_id: "NOQUEUE".into(),
                    });
                }
                Action::Recipients(list) => {
                    if let Some(t) = txn.as_mut() {
                        t.1 = list.into_iter().map(|r| r.address).collect();
                    }
                    core.answer(Answer::Sent);
                }
                Action::Content(c) => {
                    if let Some(t) = txn.as_mut() {
                        t.2.extend_from_slice(&c);
                    }
                }
                Action::Commit => {
                    let reply = match txn.take() {
                        Some((mut b, rcpts, content)) => {
                            if content.iter().any(|&c| c >= 0x80) {
                                b.body_8bit = true;
                            }
                            match hand_over(&b, &rcpts, &content, params) {
                                Outcome::Queued(id) => format!("250 2.0.0 Ok: queued as {id}"),
                                Outcome::Dropped(_) => "250 2.0.0 Ok: queued in maildrop".into(),
                                Outcome::Refused(code, text) => smtp_refusal(code, &text),
                                Outcome::Failed(why) => {
                                    eprintln!("sendmail: {why}");
                                    "451 4.3.0 Error: queue file write error".into()
                                }
                            }
                        }
                        None => "451 4.3.0 Error: queue file write error".into(),
                    };
                    core.answer(Answer::CommitReply(reply_from_text(&reply)));
                }
                Action::Abort => txn = None,
                // Neither is offered: no TLS, no AUTH on a pipe.
                Action::Authenticate { .. } => core.answer(Answer::TimedOut),
                Action::StartTls => core.event(Event::TlsFailed("no TLS on a pipe".into())),
                Action::Close => {
                    let _ = out.flush();
                    return ExitCode::SUCCESS;
                }
            }
        }
        match core.wants() {
            Want::Line { limit, bare_lf_ok } => {
                let _ = out.flush();
                line.clear();
                match read_line_bounded(&mut input, &mut line, limit) {
                    Ok(0) | Err(_) => core.event(Event::Closed),
                    Ok(_) if line.len() > limit + 2 => core.event(Event::LineTooLong),
                    Ok(_) => {
                        let (l, bare) = match line.strip_suffix(b"\n") {
                            Some(l) => match l.strip_suffix(b"\r") {
                                Some(l) => (l, false),
                                None => (l, true),
                            },
                            None => (&line[..], false),
                        };
                        if l.len() > limit {
                            core.event(Event::LineTooLong);
                        } else if bare && !bare_lf_ok {
                            core.event(Event::LineBareLf);
                        } else {
                            core.line(l);
                        }
                    }
                }
            }
            want @ (Want::Data | Want::Chunk { .. }) => {
                let buf = match input.fill_buf() {
                    Ok(b) if !b.is_empty() => b,
                    _ => {
                        core.event(Event::Closed);
                        continue;
                    }
                };
                let take = match want {
                    Want::Chunk { remaining } => buf
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX)),
                    _ => buf.len(),
                };
                let n = core.content(&buf[..take]);
                input.consume(n);
            }
            Want::Answer | Want::Tls => core.event(Event::Closed),
            Want::Done => return ExitCode::SUCCESS,
        }
    }
}

/// Reads one line into `line`, keeping at most `limit + 3` bytes of it: the
/// rest of a longer line is read and dropped. Returns the bytes read
/// (0 at end of input).
fn read_line_bounded(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = (limit + 3).saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        input.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

/// A one-line reply (`NNN text` or `NNN X.Y.Z text`) as a [`Reply`].
fn reply_from_text(text: &str) -> postern_proto::smtp::Reply {
    let code = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(451);
    let rest = text.get(4..).unwrap_or("");
    match rest.split_once(' ') {
        Some((enh, t))
            if enh.split('.').count() == 3
                && enh.bytes().all(|c| c.is_ascii_digit() || c == b'.') =>
        {
            postern_proto::smtp::Reply::new(code, enh, t)
        }
        _ => postern_proto::smtp::Reply::bare(code, rest),
    }
}

/// pickup's refusal as an SMTP reply: its text starts with the SMTP code
/// when a restriction or cleanup refused; otherwise the exit code says.
fn smtp_refusal(exit: u8, text: &str) -> String {
    let starts_with_code = text.len() > 4
        && text.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && text.as_bytes()[3] == b' ';
    if starts_with_code {
        return text.to_string();
    }
    match exit {
        EX_TEMPFAIL => format!("451 4.3.0 {text}"),
        EX_NOPERM => format!("554 5.7.1 {text}"),
        _ => format!("554 5.5.0 {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bs_lines_are_read_within_their_limit() {
        let mut input = std::io::Cursor::new(format!("ok\r\n{}\r\nnext\r\n", "x".repeat(100)));
        let mut line = Vec::new();
        assert_eq!(read_line_bounded(&mut input, &mut line, 10).unwrap(), 4);
        assert_eq!(line, b"ok\r\n");
        line.clear();
        assert_eq!(read_line_bounded(&mut input, &mut line, 10).unwrap(), 102);
        assert_eq!(line.len(), 13, "kept no more than limit + 3 bytes");
        line.clear();
        assert_eq!(read_line_bounded(&mut input, &mut line, 10).unwrap(), 6);
        assert_eq!(line, b"next\r\n");
        line.clear();
        assert_eq!(read_line_bounded(&mut input, &mut line, 10).unwrap(), 0);
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_parse_like_postfix() {
        let o = parse(Mode::Deliver, &args("-t -oi -fbob@x.example -F Bob -N success,delay -R hdrs -V env1 -B 8BITMIME -odb -oem a@b")).unwrap();
        assert!(o.begin.extract && o.ignore_dots);
        assert_eq!(o.begin.sender, "bob@x.example");
        assert!(o.begin.sender_given);
        assert_eq!(o.begin.full_name, "Bob");
        assert_eq!(o.begin.notify, 1 | 4);
        assert_eq!(o.begin.ret, 2);
        assert_eq!(o.begin.envid, "env1");
        assert!(o.begin.body_8bit);
        assert_eq!(o.recipients, vec!["a@b"]);
        let o = parse(Mode::Deliver, &args("-ti -f alice x y")).unwrap();
        assert!(o.begin.extract && o.ignore_dots);
        assert_eq!(o.begin.sender, "alice");
        assert_eq!(o.recipients, vec!["x", "y"]);
        assert_eq!(
            parse(Mode::Deliver, &args("-bp")).unwrap().mode,
            Mode::Mailq
        );
        assert_eq!(
            parse(Mode::Deliver, &args("-bi")).unwrap().mode,
            Mode::Newaliases
        );
        assert_eq!(parse(Mode::Deliver, &args("-bs")).unwrap().mode, Mode::Smtp);
        assert_eq!(parse(Mode::Deliver, &args("-q")).unwrap().mode, Mode::Flush);
        assert_eq!(
            parse(Mode::Deliver, &args("-q30m")).unwrap().mode,
            Mode::Flush
        );
        assert_eq!(
            parse(Mode::Deliver, &args("-r <> -- -x"))
                .unwrap()
                .recipients,
            vec!["-x"]
        );
        assert!(parse(Mode::Deliver, &args("-k a")).is_err());
        assert!(parse(Mode::Deliver, &args("-N sometimes a")).is_err());
        assert!(parse(Mode::Deliver, &args("-N never,success a")).is_err());
        assert!(parse(Mode::Deliver, &args("-R most a")).is_err());
        assert!(parse(Mode::Deliver, &args("-B 9BIT a")).is_err());
        assert!(parse(Mode::Deliver, &args("-bt")).is_err());
        assert!(parse(Mode::Deliver, &args("-f")).is_err());
    }
}
