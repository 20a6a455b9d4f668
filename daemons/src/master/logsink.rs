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

    fn write(&self, tag: &str, pid: u32, text: &str) {
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
        let stamp = clock::syslog_stamp();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = match &mut *out {
            Output::Stderr => writeln!(
                std::io::stderr(),
                "{stamp} {} {tag}[{pid}]: {text}",
                self.host
            ),
            Output::File(f) => writeln!(f, "{stamp} {} {tag}[{pid}]: {text}", self.host),
            // Facility mail (2).
            Output::Syslog(s) => s
                .send(format!("<{}>{stamp} {tag}[{pid}]: {text}", 2 * 8 + severity).as_bytes())
                .map(|_| ()),
        };
    }

    /// A line from the master itself.
    pub fn master(&self, text: &str) {
        self.write(
            &format!("{}/master", self.syslog_name),
            std::process::id(),
            text,
        );
    }

    /// A raw line read from a daemon's stderr pipe: `name<TAB>text`.
    pub fn daemon_line(&self, role: &str, pid: u32, raw: &[u8]) {
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
            return;
        }
        self.write(&format!("{name}/{role}"), pid, &text);
    }
}
