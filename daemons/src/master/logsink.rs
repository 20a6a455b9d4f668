//! Where log lines end up: stderr (--foreground), a file (maillog_file), or
//! syslog through /dev/log. Lines from daemons arrive on pipes and are
//! checked here: the master adds the role and pid itself.
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use crate::clock;
use crate::log::{MAX_LINE, sanitize_name};

pub enum Output {
    Stderr,
    File(std::fs::File),
    Syslog(UnixDatagram),
}

pub struct LogSink {
    out: Mutex<Output>,
    stamp: Mutex<Stamp>,
    host: String,
    syslog_name: String,
}

impl LogSink {
    pub fn new(out: Output, syslog_name: &str) -> LogSink {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.split('.').next().unwrap_or("localhost").to_string())
            .unwrap_or_else(|| "localhost".into());
        LogSink {
            out: Mutex::new(out),
            stamp: Mutex::default(),
            host,
            syslog_name: sanitize_name(syslog_name),
        }
    }

    /// Chooses the output from `maillog_file`: a path, or empty for syslog
    /// (falling back to `$data_directory/maillog` where no syslog runs).
    pub fn open(
        foreground: bool,
        maillog_file: &str,
        data_dir: &std::path::Path,
        syslog_name: &str,
    ) -> Result<LogSink, String> {
        if foreground {
            return Ok(LogSink::new(Output::Stderr, syslog_name));
        }
        let file = if maillog_file.is_empty() {
            if let Ok(s) = UnixDatagram::unbound()
                && s.connect("/dev/log").is_ok()
            {
                return Ok(LogSink::new(Output::Syslog(s), syslog_name));
            }
            data_dir.join("maillog")
        } else {
            std::path::PathBuf::from(maillog_file)
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .map_err(|e| format!("cannot open log file {}: {e}", file.display()))?;
        Ok(LogSink::new(Output::File(f), syslog_name))
    }

    /// Appends one formatted line to `batch` (files and stderr), or sends
    /// it at once (syslog takes one datagram per line).
    fn format(&self, out: &mut Output, batch: &mut Vec<u8>, tag: &str, pid: u32, text: &str) {
        use std::fmt::Write as _;
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
        let stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner()).get();
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

    fn write(&self, tag: &str, pid: u32, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        self.format(&mut out, &mut batch, tag, pid, text);
        Self::flush(&mut out, &batch);
    }

    /// A line from the master itself.
    pub fn master(&self, text: &str) {
        self.write(
            &format!("{}/master", self.syslog_name),
            std::process::id(),
            text,
        );
    }

    /// Raw lines read from a daemon's stderr pipe, each `name<TAB>text`,
    /// written with one write(2) for the lot.
    pub fn daemon_lines<'a>(&self, role: &str, pid: u32, raws: impl Iterator<Item = &'a [u8]>) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        for raw in raws {
            let raw = String::from_utf8_lossy(&raw[..raw.len().min(MAX_LINE + 80)]);
            let (name, text) = match raw.split_once('\t') {
                Some((n, t)) => (sanitize_name(n), t),
                // Not our format (a panic message from the runtime, say).
                None => (self.syslog_name.clone(), raw.as_ref()),
            };
            let text: String = text
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            if text.is_empty() {
                continue;
            }
            self.format(&mut out, &mut batch, &format!("{name}/{role}"), pid, &text);
        }
        Self::flush(&mut out, &batch);
    }
}

/// The syslog time stamp, formatted once a second rather than once a line.
#[derive(Default)]
struct Stamp {
    second: i64,
    text: String,
}

impl Stamp {
    fn get(&mut self) -> String {
        let now = jiff::Timestamp::now();
        if now.as_second() != self.second || self.text.is_empty() {
            self.second = now.as_second();
            self.text = clock::syslog_stamp(now);
        }
        self.text.clone()
    }
}
