//! Wall-clock time for log lines and message headers. The system time zone
//! is read once, before the jail hides /etc/localtime.
use std::sync::OnceLock;

use jiff::tz::TimeZone;

static TZ: OnceLock<TimeZone> = OnceLock::new();

pub fn init() {
    let _ = TZ.set(TimeZone::try_system().unwrap_or(TimeZone::UTC));
}

pub fn tz() -> TimeZone {
    TZ.get().cloned().unwrap_or(TimeZone::UTC)
}

/// Microseconds since the epoch (queue records, log line stamps).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn now() -> jiff::Zoned {
    jiff::Timestamp::now().to_zoned(tz())
}

/// `Nov 24 18:37:01`, the syslog time stamp of `t`.
pub fn syslog_stamp(t: jiff::Timestamp) -> String {
    t.to_zoned(tz()).strftime("%b %e %H:%M:%S").to_string()
}

/// RFC 5322 date: `Tue, 24 Nov 2026 18:37:01 +0100 (CET)`.
pub fn rfc5322() -> String {
    let z = now();
    format!(
        "{} ({})",
        z.strftime("%a, %e %b %Y %H:%M:%S %z"),
        z.strftime("%Z")
    )
    .replace("  ", " ")
}
