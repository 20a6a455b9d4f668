//! Where log lines end up: stderr (--foreground), a file (maillog_file), or
//! syslog through /dev/log. Lines from daemons arrive on pipes and are
//! checked here: the master adds the role and pid itself.
//!
//! One collector thread reads every daemon's pipe. After a pipe turns
//! readable it waits [`LOG_COALESCE`] so that a busy daemon's lines arrive a
//! batch at a time: while it waits, the daemons' writes wake nobody. Each
//! line carries the time the daemon wrote it, and every batch (and every
//! line of the master's own, which first takes whatever the pipes hold) is
//! written in time order, so the log reads in the order things happened.
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::clock::{self, now_us};
use crate::log::{MAX_LINE, sanitize_name};

/// The size asked for each daemon's log pipe (the default is 64 KiB).
const PIPE_SIZE: i32 = 1 << 20;

/// How long the collector lets lines gather after a pipe turns readable.
pub const LOG_COALESCE: Duration = Duration::from_millis(10);
/// The pipes are read one after another, and a daemon writes a line just
/// after stamping it, so a line stamped this close to a read may still be
/// on its way: such lines wait for the next batch.
const HOLD_US: u64 = 2_000;

pub enum Output {
    Stderr,
    File(LogFile),
    Syslog(UnixDatagram),
}

/// `maillog_file`, reopened when it has been renamed or removed (checked
/// at most once a second, before a write): a log rotation is a rename by
/// any tool (the appliance image's cron job, logrotate without
/// copytruncate), with no signal to the master.
pub struct LogFile {
    f: std::fs::File,
    path: std::path::PathBuf,
    checked: std::time::Instant,
}

impl LogFile {
    pub fn open(path: &std::path::Path) -> std::io::Result<LogFile> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogFile {
            f,
            path: path.to_path_buf(),
            checked: std::time::Instant::now(),
        })
    }

    /// Reopens the path when it no longer names the open file.
    fn follow(&mut self) {
        if self.checked.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        self.checked = std::time::Instant::now();
        use std::os::unix::fs::MetadataExt;
        let same = match (std::fs::metadata(&self.path), self.f.metadata()) {
            (Ok(p), Ok(f)) => p.dev() == f.dev() && p.ino() == f.ino(),
            _ => false,
        };
        if !same && let Ok(n) = LogFile::open(&self.path) {
            self.f = n.f;
        }
    }

    fn write_all(&mut self, batch: &[u8]) -> std::io::Result<()> {
        self.follow();
        self.f.write_all(batch)
    }
}

pub struct LogSink {
    out: Mutex<Output>,
    stamp: Mutex<Stamp>,
    host: String,
    syslog_name: String,
    sources: Mutex<Sources>,
    /// Written to when a pipe is added, to wake the collector's poll.
    wake: (OwnedFd, OwnedFd),
}

/// The daemons' stderr pipes.
#[derive(Default)]
struct Sources {
    list: Vec<Source>,
    /// Bumped when the list changes (the collector then polls anew).
    generation: u64,
    /// The newest time stamp written: no line is stamped before it.
    last_us: u64,
    /// Lines stamped too recently to be written yet (see [`HOLD_US`]).
    pending: Vec<Line>,
    /// The read buffer, kept between batches.
    chunk: Vec<u8>,
}

struct Source {
    role: &'static str,
    pid: u32,
    /// Shared with the collector's poll list, which must not cost the
    /// master a descriptor per daemon.
    file: Arc<std::fs::File>,
    /// A partial line.
    buf: Vec<u8>,
    eof: bool,
}

/// A line ready to be written.
struct Line {
    at_us: u64,
    tag: String,
    pid: u32,
    text: String,
}

impl LogSink {
    pub fn new(out: Output, syslog_name: &str) -> Result<LogSink, String> {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.split('.').next().unwrap_or("localhost").to_string())
            .unwrap_or_else(|| "localhost".into());
        let wake = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("cannot create the log collector's pipe: {e}"))?;
        Ok(LogSink {
            out: Mutex::new(out),
            stamp: Mutex::default(),
            host,
            syslog_name: sanitize_name(syslog_name),
            sources: Mutex::default(),
            wake,
        })
    }

    /// Chooses the output from `maillog_file`: a path, or empty for syslog
    /// (falling back to `$data_directory/maillog` where no syslog runs),
    /// or stderr under --foreground.
    pub fn open(
        foreground: bool,
        maillog_file: &str,
        data_dir: &std::path::Path,
        syslog_name: &str,
    ) -> Result<LogSink, String> {
        // Under --foreground an empty maillog_file means stderr; a set one
        // is honoured, as Postfix's `postfix start-fg` does (/dev/stdout
        // for a container).
        if foreground && maillog_file.is_empty() {
            return LogSink::new(Output::Stderr, syslog_name);
        }
        let file = if maillog_file.is_empty() {
            if let Ok(s) = UnixDatagram::unbound()
                && s.connect("/dev/log").is_ok()
            {
                return LogSink::new(Output::Syslog(s), syslog_name);
            }
            data_dir.join("maillog")
        } else {
            std::path::PathBuf::from(maillog_file)
        };
        let f = LogFile::open(&file)
            .map_err(|e| format!("cannot open log file {}: {e}", file.display()))?;
        LogSink::new(Output::File(f), syslog_name)
    }

    /// Appends one formatted line to `batch` (files and stderr), or sends
    /// it at once (syslog takes one datagram per line).
    fn format(&self, out: &mut Output, batch: &mut Vec<u8>, l: &Line) {
        use std::fmt::Write as _;
        let text = &l.text;
        let severity = if text.starts_with("warning:") {
            4
        } else if text.starts_with("error:")
            || text.starts_with("fatal:")
            || text.starts_with("panic:")
        {
            3
        } else {
            6
        };
        let mut line = String::with_capacity(text.len() + 64);
        let stamp = self
            .stamp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(l.at_us);
        let (tag, pid) = (&l.tag, l.pid);
        match out {
            // Facility mail (2).
            Output::Syslog(s) => {
                let _ = write!(line, "<{}>{stamp} {tag}[{pid}]: {text}", 2 * 8 + severity);
                let _ = s.send(line.as_bytes());
            }
            Output::Stderr | Output::File(_) => {
                let _ = writeln!(line, "{stamp} {} {tag}[{pid}]: {text}", self.host);
                batch.extend_from_slice(line.as_bytes());
            }
        }
    }

    /// Writes what `format` batched, in one write(2) for a file.
    fn flush(out: &mut Output, batch: &[u8]) {
        if batch.is_empty() {
            return;
        }
        let _ = match out {
            Output::Stderr => std::io::stderr().lock().write_all(batch),
            Output::File(f) => f.write_all(batch),
            Output::Syslog(_) => Ok(()),
        };
    }

    /// A line from the master itself; whatever the daemons wrote before it
    /// goes first.
    pub fn master(&self, text: &str) {
        self.drain(Some(Line {
            at_us: 0,
            tag: format!("{}/master", self.syslog_name),
            pid: std::process::id(),
            text: text.to_string(),
        }));
    }

    /// Takes a daemon's stderr pipe, to be read by the collector until the
    /// daemon exits.
    pub fn add_daemon(&self, role: &'static str, pid: u32, pipe: OwnedFd) -> std::io::Result<()> {
        let fl =
            OFlag::from_bits_truncate(nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_GETFL)?);
        nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
        // Room for a burst while the collector waits: a daemon whose pipe
        // is full blocks on its next line. 1 MiB is the unprivileged limit
        // by default; a smaller pipe still works, only sooner full.
        let _ = nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        let mut src = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        src.list.push(Source {
            role,
            pid,
            file: Arc::new(std::fs::File::from(pipe)),
            buf: Vec::new(),
            eof: false,
        });
        src.generation += 1;
        drop(src);
        let _ = nix::unistd::write(&self.wake.1, b"x");
        Ok(())
    }

    /// Starts the collector thread.
    pub fn start_collector(self: &Arc<Self>) -> std::io::Result<()> {
        let sink = self.clone();
        std::thread::Builder::new()
            .name("log-collector".into())
            .spawn(move || sink.collect())
            .map(|_| ())
    }

    fn collect(&self) {
        let mut polled: Vec<Arc<std::fs::File>> = Vec::new();
        let mut seen = u64::MAX;
        let mut scratch = [0u8; 256];
        loop {
            let held = {
                let src = self.sources.lock().unwrap_or_else(|e| e.into_inner());
                if src.generation != seen {
                    seen = src.generation;
                    polled = src.list.iter().map(|s| s.file.clone()).collect();
                }
                !src.pending.is_empty()
            };
            let mut fds: Vec<PollFd> = polled
                .iter()
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(self.wake.0.as_fd(), PollFlags::POLLIN));
            let timeout = if held {
                PollTimeout::from(LOG_COALESCE.as_millis() as u16)
            } else {
                PollTimeout::NONE
            };
            if let Err(e) = poll(&mut fds, timeout)
                && e != nix::errno::Errno::EINTR
            {
                // Never spin: wait as long as a batch would.
                std::thread::sleep(LOG_COALESCE);
            }
            drop(fds);
            while nix::unistd::read(&self.wake.0, &mut scratch).is_ok_and(|n| n > 0) {}
            std::thread::sleep(LOG_COALESCE);
            self.drain(None);
        }
    }

    /// Reads every pipe to the end of what it holds and writes the complete
    /// lines in time order: all of them when the master adds a line of its
    /// own (`extra`), else those stamped before the last [`HOLD_US`].
    fn drain(&self, extra: Option<Line>) {
        let mut src = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_us();
        let cutoff = if extra.is_some() {
            u64::MAX
        } else {
            now.saturating_sub(HOLD_US)
        };
        let mut lines = Vec::new();
        let mut chunk = std::mem::take(&mut src.chunk);
        chunk.resize(64 * 1024, 0);
        for s in src.list.iter_mut() {
            loop {
                match (&*s.file).read(&mut chunk) {
                    Ok(0) => s.eof = true,
                    Ok(n) => {
                        s.buf.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => s.eof = true,
                }
                break;
            }
            let mut end = s.buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if s.eof || (end == 0 && s.buf.len() > MAX_LINE * 2) {
                end = s.buf.len();
            }
            for raw in s.buf[..end].split(|&b| b == b'\n') {
                if let Some(l) = self.parse(s.role, s.pid, raw, now) {
                    lines.push(l);
                }
            }
            s.buf.drain(..end);
        }
        src.chunk = chunk;
        let before = src.list.len();
        src.list.retain(|s| !s.eof);
        if src.list.len() != before {
            src.generation += 1;
        }
        // Stamps come from the daemons: keep them within what has already
        // been written and now, so a bad one only reorders its own batch.
        let floor = src.last_us;
        for l in &mut lines {
            l.at_us = l.at_us.clamp(floor, now.max(floor));
        }
        lines.append(&mut src.pending);
        // The master's line is the newest: it says what happened after all
        // the daemons' lines were read.
        lines.extend(extra.map(|l| Line {
            at_us: now.max(floor),
            ..l
        }));
        lines.sort_by_key(|l| l.at_us);
        let ready = lines.partition_point(|l| l.at_us <= cutoff);
        src.pending = lines.split_off(ready);
        if lines.is_empty() {
            return;
        }
        src.last_us = lines.last().map_or(floor, |l| l.at_us);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        for l in &lines {
            self.format(&mut out, &mut batch, l);
        }
        Self::flush(&mut out, &batch);
    }

    /// One raw line from a daemon: `name<TAB>microseconds<TAB>text`. Anything
    /// else (a panic message from the runtime, say) is kept as text, stamped
    /// when it was read.
    fn parse(&self, role: &str, pid: u32, raw: &[u8], now: u64) -> Option<Line> {
        let raw = String::from_utf8_lossy(&raw[..raw.len().min(MAX_LINE + 80)]);
        let (name, at_us, text) = match raw.split_once('\t') {
            Some((n, rest)) => match rest.split_once('\t') {
                Some((t, text)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                    (sanitize_name(n), t.parse().unwrap_or(now), text)
                }
                _ => (sanitize_name(n), now, rest),
            },
            None => (self.syslog_name.clone(), now, raw.as_ref()),
        };
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        (!text.is_empty()).then(|| Line {
            at_us,
            tag: format!("{name}/{role}"),
            pid,
            text,
        })
    }
}

/// The syslog time stamp, formatted once a second rather than once a line.
#[derive(Default)]
struct Stamp {
    second: i64,
    text: String,
}

impl Stamp {
    fn get(&mut self, at_us: u64) -> String {
        let second = (at_us / 1_000_000) as i64;
        if second != self.second || self.text.is_empty() {
            self.second = second;
            let t = jiff::Timestamp::from_second(second).unwrap_or_else(|_| jiff::Timestamp::now());
            self.text = clock::syslog_stamp(t);
        }
        self.text.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreground_logs_to_stderr_unless_maillog_file_is_set() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("maillog");
        let fg = LogSink::open(true, file.to_str().unwrap(), d.path(), "postfix").unwrap();
        assert!(matches!(*fg.out.lock().unwrap(), Output::File(_)));
        fg.master("hello from start-fg");
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("postfix/master[")
        );
        let fg = LogSink::open(true, "", d.path(), "postfix").unwrap();
        assert!(matches!(*fg.out.lock().unwrap(), Output::Stderr));
    }

    fn sink_to(path: &std::path::Path) -> Arc<LogSink> {
        let f = LogFile::open(path).unwrap();
        Arc::new(LogSink::new(Output::File(f), "postern").unwrap())
    }

    /// Rotation by rename: the lines before it stay in the renamed file,
    /// the lines after it (once the check has run) go to a new file at
    /// the configured path; removing the file works the same way.
    #[test]
    fn a_renamed_or_removed_log_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let sink = sink_to(&path);
        sink.master("before the rotation");
        std::fs::rename(&path, dir.path().join("maillog.0")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        sink.master("after the rotation");
        assert_eq!(
            texts(&dir.path().join("maillog.0")),
            ["before the rotation"]
        );
        assert_eq!(texts(&path), ["after the rotation"]);
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        sink.master("after the removal");
        assert_eq!(texts(&path), ["after the removal"]);
    }

    fn texts(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split("]: ").nth(1).unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn lines_from_several_daemons_come_out_in_the_order_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let sink = sink_to(&path);
        let (ra, wa) = nix::unistd::pipe().unwrap();
        let (rb, wb) = nix::unistd::pipe().unwrap();
        sink.add_daemon("smtpd", 10, ra).unwrap();
        sink.add_daemon("qmgr", 20, rb).unwrap();
        let now = now_us();
        let line = |t: u64, text: &str| format!("postern\t{t}\t{text}\n");
        nix::unistd::write(&wa, line(now - 4000, "one").as_bytes()).unwrap();
        nix::unistd::write(&wb, line(now - 3000, "two").as_bytes()).unwrap();
        nix::unistd::write(&wa, line(now - 2000, "three").as_bytes()).unwrap();
        // A stamp from the future is pulled back to the time it was read.
        nix::unistd::write(&wb, line(now + 3_600_000_000, "late").as_bytes()).unwrap();
        // Not our format: kept, stamped when read.
        nix::unistd::write(&wa, b"thread 'main' panicked\n").unwrap();
        // A partial line waits for its end.
        nix::unistd::write(&wb, b"postern\t1\tunfin").unwrap();
        sink.master("master line");
        let got = texts(&path);
        assert_eq!(&got[..3], ["one", "two", "three"], "{got:?}");
        assert_eq!(got.last().unwrap(), "master line");
        assert!(
            got.contains(&"late".to_string())
                && got.contains(&"thread 'main' panicked".to_string())
        );
        assert!(!got.iter().any(|l| l.contains("unfin")), "{got:?}");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("postern/smtpd[10]: one")
        );
        // The daemon exits: its partial line is written, never lost, and
        // (stamped before everything written so far) it comes in order.
        drop(wb);
        sink.master("after");
        let got = texts(&path);
        assert_eq!(&got[got.len() - 2..], ["unfin", "after"], "{got:?}");
        drop(wa);
    }

    #[test]
    fn the_collector_writes_daemon_lines_without_being_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let sink = sink_to(&path);
        sink.start_collector().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        sink.add_daemon("cleanup", 30, r).unwrap();
        nix::unistd::write(&w, format!("postern\t{}\tfirst\n", now_us()).as_bytes()).unwrap();
        let t0 = std::time::Instant::now();
        while !texts(&path).contains(&"first".to_string()) {
            assert!(t0.elapsed() < Duration::from_secs(5), "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
