//! Every figure Postern exports, named once: the metrics role renders
//! only these (with their HELP and TYPE lines), and refuses a report that
//! names anything else, gives the wrong labels, or comes from a role that
//! does not keep that figure. Names and labels are fixed: dashboards rely
//! on them (docs/metrics.md lists them).
use postern_config::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Reported as the Unix time of the oldest item; rendered as a gauge of
    /// the seconds since then, so it grows between reports.
    Age,
    Histogram,
}

#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// The roles that may report it.
    pub from: &'static [Role],
}

/// Histogram bucket bounds, in seconds: a local delivery takes
/// milliseconds, a deferred message days.
pub const BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
    86400.0, 432000.0,
];

macro_rules! families {
    ($($id:ident = $name:literal, $kind:ident, [$($label:literal),*], [$($role:ident),*], $help:literal;)+) => {
        $(pub static $id: Family = Family {
            name: $name,
            kind: Kind::$kind,
            help: $help,
            labels: &[$($label),*],
            from: &[$(Role::$role),*],
        };)+
        /// Every family, in the order they are rendered.
        pub static ALL: &[&Family] = &[$(&$id),+];
    };
}

families! {
    RECEIVED = "postern_messages_received_total", Counter, ["service", "source"], [Smtpd, Pickup, Bounce, Local],
        "Messages queued, by master.cf service and source (smtp, submission, pickup, bounce, local).";
    RECIPIENTS = "postern_recipients_total", Counter, ["status", "transport", "dsn_class"], [Qmgr],
        "Recipient delivery attempts, by outcome (sent, deferred, bounced), transport and the first digit of the DSN.";
    REJECTS = "postern_rejects_total", Counter, ["stage", "check"], [Smtpd],
        "SMTP commands refused, by stage (connect, helo, mail, rcpt, data, end-of-data, vrfy, auth, starttls) and the check that refused.";
    CONNECTIONS = "postern_smtp_connections_total", Counter, ["service"], [Smtpd],
        "SMTP connections accepted, by master.cf service.";
    SESSIONS = "postern_smtp_sessions", Gauge, ["service"], [Smtpd],
        "Open SMTP sessions, by master.cf service.";
    TLS = "postern_tls_sessions_total", Counter, ["direction", "version", "group"], [Smtpd, Smtp],
        "TLS sessions established, by direction (inbound, outbound), protocol version and key exchange group.";
    SASL = "postern_sasl_authentications_total", Counter, ["result", "mechanism"], [Smtpd],
        "SASL authentications, by result (success, failure) and mechanism.";
    RESTARTS = "postern_daemon_restarts_total", Counter, ["role"], [Master],
        "Daemon processes restarted by the master after they exited, by role.";
    THROTTLES = "postern_daemon_throttles_total", Counter, ["role"], [Master],
        "Times the master throttled a role that kept failing, by role.";
    VIOLATIONS = "postern_ipc_violations_total", Counter, ["edge"], [
        Master, Broker, Smtpd, Cleanup, Qmgr, Resolver, Smtp, Local, Bounce, Pickup, Auth, Cache,
        Proxymap, Verify, Metrics, Policy, Milter, Postscreen, Sts
    ],
        "IPC channels dropped for a protocol violation, by edge.";
    QUEUE = "postern_queue_messages", Gauge, ["queue"], [Broker],
        "Messages in the queue, by queue (incoming, active, deferred, hold).";
    OLDEST = "postern_queue_oldest_message_age_seconds", Age, ["queue"], [Broker],
        "Age of the oldest message in each queue, from its arrival.";
    ACTIVE = "postern_active_deliveries", Gauge, ["destination"], [Qmgr],
        "Deliveries in progress, for the busiest destinations (the rest are summed as \"other\").";
    LATENCY = "postern_delivery_latency_seconds", Histogram, [], [Qmgr],
        "Time from arrival to a recipient's final status (sent or bounced).";
    ACTIVE_TIME = "postern_active_queue_seconds", Histogram, [], [Qmgr],
        "Time a message spends in the active queue on one delivery attempt.";
    SCREENED = "postern_postscreen_verdicts_total", Counter, ["verdict"], [Postscreen],
        "Clients postscreen decided on, by verdict (pass_new, pass_old, allowlisted, denylisted, pregreet, dnsbl, pipelining, non_smtp, bare_newline, hangup, busy).";
}

/// The family a series name belongs to, and for a histogram which part
/// (`_bucket`, `_sum`, `_count`) it is.
pub fn lookup(series: &str) -> Option<(&'static Family, Part)> {
    for f in ALL {
        if f.name == series && f.kind != Kind::Histogram {
            return Some((f, Part::Value));
        }
        if f.kind == Kind::Histogram
            && let Some(rest) = series.strip_prefix(f.name)
        {
            match rest {
                "_bucket" => return Some((f, Part::Bucket)),
                "_sum" => return Some((f, Part::Sum)),
                "_count" => return Some((f, Part::Count)),
                _ => {}
            }
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Value,
    Bucket,
    Sum,
    Count,
}

impl Part {
    /// Labels a series of this part carries.
    pub fn label_count(self, f: &Family) -> usize {
        f.labels.len() + usize::from(self == Part::Bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for (i, f) in ALL.iter().enumerate() {
            assert!(f.name.starts_with("postern_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
            if matches!(f.kind, Kind::Age | Kind::Histogram) {
                assert!(f.name.ends_with("_seconds"), "{}", f.name);
            }
            assert!(ALL[i + 1..].iter().all(|g| g.name != f.name));
            assert!(!f.help.contains('\n') && !f.help.is_empty());
            assert!(!f.from.is_empty());
        }
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            lookup("postern_delivery_latency_seconds_bucket").map(|(f, p)| (f.name, p)),
            Some((LATENCY.name, Part::Bucket))
        );
        assert!(lookup("postern_delivery_latency_seconds").is_none());
        assert!(lookup("postern_rejects").is_none());
    }
}
