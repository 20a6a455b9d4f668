//! Logging in Postfix's shape.
//!
//! A daemon writes one line per event to stderr as
//! `syslog_name<TAB>microseconds since the epoch<TAB>text`;
//! its stderr is a pipe to the master, which checks the line and writes
//! `Mmm dd HH:MM:SS host syslog_name/role[pid]: text` to the log. The master
//! supplies the role and pid itself, so a compromised daemon cannot forge
//! lines in another daemon's name. Severity is a prefix of the text, as in
//! Postfix: `warning: `, `error: `, `fatal: `.
use std::io::Write;
use std::sync::OnceLock;

static NAME: OnceLock<String> = OnceLock::new();

type Sink = Box<dyn Fn(&str, &str) + Send + Sync>;
/// In the master, lines go straight to its log sink instead of a pipe.
static SINK: OnceLock<Sink> = OnceLock::new();

pub fn set_sink(f: Sink) {
    let _ = SINK.set(f);
}

/// Longest line a daemon writes; one write(2) below PIPE_BUF is atomic.
pub const MAX_LINE: usize = 4000;

/// The status word of a delivery line: Postfix's for deliveries, and
/// `deliverable` or `undeliverable` for address-verification probes.
pub fn status_word(status: postern_ipc::deliver::Status, probe: bool) -> &'static str {
    use postern_ipc::deliver::Status;
    match (status, probe) {
        (Status::Sent, false) => "sent",
        (Status::Deferred, false) => "deferred",
        (Status::Bounced, false) => "bounced",
        (Status::Sent, true) => "deliverable",
        (_, true) => "undeliverable",
    }
}

/// Sets the default syslog_name for this process's lines.
pub fn init(syslog_name: &str) {
    let _ = NAME.set(sanitize_name(syslog_name));
}

/// Keeps a syslog name to `[A-Za-z0-9._/-]`, so it cannot break the line.
pub fn sanitize_name(s: &str) -> String {
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        .take(64)
        .collect();
    if s.is_empty() { "postern".into() } else { s }
}

fn name() -> &'static str {
    NAME.get().map_or("postern", String::as_str)
}

/// Writes one line tagged with `syslog_name` (a service's override, or None).
pub fn line_as(syslog_name: Option<&str>, text: &str) {
    if let Some(sink) = SINK.get() {
        return sink(syslog_name.unwrap_or(name()), text);
    }
    let mut buf = String::with_capacity(text.len() + 48);
    buf.push_str(syslog_name.unwrap_or(name()));
    buf.push('\t');
    // When it happened: the master writes lines from all daemons in this order.
    buf.push_str(&crate::clock::now_us().to_string());
    buf.push('\t');
    for c in text.chars() {
        if buf.len() >= MAX_LINE {
            break;
        }
        // No line breaks or other controls inside one log line.
        buf.push(if c.is_control() { '?' } else { c });
    }
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

pub fn line(text: &str) {
    line_as(None, text)
}

#[macro_export]
macro_rules! info {
    ($($a:tt)*) => { $crate::log::line(&format!($($a)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($a:tt)*) => { $crate::log::line(&format!("warning: {}", format!($($a)*))) };
}
#[macro_export]
macro_rules! error {
    ($($a:tt)*) => { $crate::log::line(&format!("error: {}", format!($($a)*))) };
}
#[macro_export]
macro_rules! fatal {
    ($($a:tt)*) => {{
        $crate::log::line(&format!("fatal: {}", format!($($a)*)));
        std::process::exit(1)
    }};
}
