//! Queue selectors (`--sender`, `--recipient-domain`, `--older-than`,
//! `--queue`, `--reason`), combined with AND and with any queue ids given,
//! and `postern queue summary`, Postfix's qshape: recipient domains by age.
use std::time::Duration;

use postern_ipc::admin_qmgr::Entry;

/// Which messages a queue command acts on.
#[derive(Default)]
pub struct Select {
    /// Queue ids (empty: any).
    pub ids: Vec<String>,
    /// The envelope sender, exactly (case-insensitive); "<>" is the null sender.
    pub sender: Option<String>,
    /// A recipient in this domain (case-insensitive).
    pub recipient_domain: Option<String>,
    /// Arrived longer ago than this.
    pub older_than: Option<Duration>,
    /// active, deferred, hold or incoming.
    pub queue: Option<String>,
    /// A recipient's delay reason matches.
    pub reason: Option<regex::bytes::Regex>,
}

pub const QUEUES: &[&str] = &["active", "deferred", "hold", "incoming"];

impl Select {
    /// From the command line's words; an error names the bad one.
    pub fn parse(
        ids: Vec<String>,
        sender: Option<String>,
        recipient_domain: Option<String>,
        older_than: Option<String>,
        queue: Option<String>,
        reason: Option<String>,
    ) -> Result<Select, String> {
        let older_than = older_than
            .map(|d| {
                postern_config::value::parse_duration(&d, "s")
                    .map(|p| p.value)
                    .map_err(|e| format!("--older-than {d}: {e}"))
            })
            .transpose()?;
        if let Some(q) = &queue
            && !QUEUES.contains(&q.as_str())
        {
            return Err(format!("--queue {q}: not one of {}", QUEUES.join(", ")));
        }
        let reason = reason
            .map(|r| {
                regex::bytes::RegexBuilder::new(&r)
                    .unicode(false)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("--reason {r}: {e}"))
            })
            .transpose()?;
        Ok(Select {
            ids,
            sender,
            recipient_domain: recipient_domain.map(|d| d.trim_start_matches('@').to_string()),
            older_than,
            queue,
            reason,
        })
    }

    /// Only ids (or nothing): the command goes to the queue manager as is.
    pub fn ids_only(&self) -> bool {
        self.sender.is_none()
            && self.recipient_domain.is_none()
            && self.older_than.is_none()
            && self.queue.is_none()
            && self.reason.is_none()
    }

    /// Does `e` match every selector? `now`: seconds since the epoch.
    pub fn matches(&self, e: &Entry, now: u64) -> bool {
        let all = self.ids.iter().any(|i| i.eq_ignore_ascii_case("ALL"));
        if !self.ids.is_empty() && !all && !self.ids.contains(&e.queue_id) {
            return false;
        }
        if let Some(s) = &self.sender {
            let want = if s == "<>" { "" } else { s.as_str() };
            if !e.sender.eq_ignore_ascii_case(want) {
                return false;
            }
        }
        if let Some(d) = &self.recipient_domain
            && !e.recipients.iter().any(|r| {
                r.address
                    .rsplit_once('@')
                    .is_some_and(|(_, dom)| dom.eq_ignore_ascii_case(d))
            })
        {
            return false;
        }
        if let Some(age) = self.older_than
            && now.saturating_sub(e.arrival_time) <= age.as_secs()
        {
            return false;
        }
        if let Some(q) = &self.queue
            && e.queue_name != *q
        {
            return false;
        }
        if let Some(re) = &self.reason
            && !e
                .recipients
                .iter()
                .any(|r| re.is_match(r.delay_reason.as_bytes()))
        {
            return false;
        }
        true
    }
}

/// qshape's age buckets, in minutes: up to 5, 10, 20, ... 1280, and older.
pub const BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// Recipients by domain and age bucket (the last column is older than the
/// last bound), busiest domains first, and the total.
pub struct Shape {
    pub total: (u64, [u64; BUCKETS.len() + 1]),
    pub domains: Vec<(String, u64, [u64; BUCKETS.len() + 1])>,
}

pub fn shape(list: &[&Entry], now: u64, top: usize) -> Shape {
    let mut by: std::collections::BTreeMap<String, [u64; BUCKETS.len() + 1]> =
        std::collections::BTreeMap::new();
    let mut total = [0u64; BUCKETS.len() + 1];
    for e in list {
        let minutes = now.saturating_sub(e.arrival_time) / 60;
        let b = BUCKETS
            .iter()
            .position(|m| minutes < *m)
            .unwrap_or(BUCKETS.len());
        for r in &e.recipients {
            let dom = r
                .address
                .rsplit_once('@')
                .map_or(String::new(), |(_, d)| d.to_ascii_lowercase());
            by.entry(dom).or_default()[b] += 1;
            total[b] += 1;
        }
    }
    let mut domains: Vec<(String, u64, [u64; BUCKETS.len() + 1])> = by
        .into_iter()
        .map(|(d, c)| (d, c.iter().sum(), c))
        .collect();
    domains.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    domains.truncate(top);
    Shape {
        total: (total.iter().sum(), total),
        domains,
    }
}

impl Shape {
    /// qshape's table.
    pub fn text(&self) -> String {
        let mut out = format!("{:>40} {:>6}", "", "T");
        for b in BUCKETS {
            out.push_str(&format!(" {b:>5}"));
        }
        out.push_str(&format!(
            " {:>5}\n",
            format!("{}+", BUCKETS[BUCKETS.len() - 1])
        ));
        let mut row = |name: &str, n: u64, c: &[u64]| {
            out.push_str(&format!("{name:>40} {n:>6}"));
            for x in c {
                out.push_str(&format!(" {x:>5}"));
            }
            out.push('\n');
        };
        row("TOTAL", self.total.0, &self.total.1);
        for (d, n, c) in &self.domains {
            row(d, *n, c);
        }
        out
    }

    pub fn json(&self, queue: &str) -> serde_json::Value {
        serde_json::json!({
            "queue": queue,
            "bucket_minutes": BUCKETS,
            "total": { "count": self.total.0, "by_age": self.total.1 },
            "domains": self.domains.iter().map(|(d, n, c)| serde_json::json!({
                "domain": d, "count": n, "by_age": c,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_ipc::admin_qmgr::Rcpt;

    fn entry(id: &str, queue: &str, age_min: u64, sender: &str, rcpts: &[(&str, &str)]) -> Entry {
        Entry {
            queue_id: id.into(),
            queue_name: queue.into(),
            arrival_time: 1_000_000 - age_min * 60,
            message_size: 10,
            sender: sender.into(),
            recipients: rcpts
                .iter()
                .map(|(a, why)| Rcpt {
                    address: a.to_string(),
                    delay_reason: why.to_string(),
                })
                .collect(),
            forced_expire: false,
        }
    }

    #[test]
    fn selectors_combine_with_and() {
        let a = entry(
            "A1",
            "deferred",
            30,
            "alice@x.test",
            &[("u@one.test", "Connection refused")],
        );
        let b = entry("B2", "hold", 2, "", &[("v@two.test", "")]);
        let s = |sender: Option<&str>,
                 dom: Option<&str>,
                 older: Option<&str>,
                 q: Option<&str>,
                 why: Option<&str>| {
            Select::parse(
                vec![],
                sender.map(Into::into),
                dom.map(Into::into),
                older.map(Into::into),
                q.map(Into::into),
                why.map(Into::into),
            )
            .unwrap()
        };
        let now = 1_000_000;
        assert!(s(Some("ALICE@x.test"), None, None, None, None).matches(&a, now));
        assert!(s(Some("<>"), None, None, None, None).matches(&b, now));
        assert!(!s(Some("<>"), None, None, None, None).matches(&a, now));
        assert!(s(None, Some("@ONE.test"), None, None, None).matches(&a, now));
        assert!(s(None, None, Some("10m"), None, None).matches(&a, now));
        assert!(!s(None, None, Some("10m"), None, None).matches(&b, now));
        assert!(s(None, None, None, Some("hold"), None).matches(&b, now));
        assert!(s(None, None, None, None, Some("refused$")).matches(&a, now));
        assert!(!s(None, None, None, None, Some("refused")).matches(&b, now));
        assert!(!s(Some("alice@x.test"), Some("two.test"), None, None, None).matches(&a, now));
        let mut ids = s(None, None, None, Some("deferred"), None);
        ids.ids = vec!["B2".into()];
        assert!(!ids.matches(&a, now) && !ids.matches(&b, now));
        assert!(Select::parse(vec![], None, None, Some("soon".into()), None, None).is_err());
        assert!(Select::parse(vec![], None, None, None, Some("queued".into()), None).is_err());
        assert!(Select::parse(vec![], None, None, None, None, Some("(".into())).is_err());
    }

    #[test]
    fn the_shape_counts_recipients_by_domain_and_age() {
        let a = entry(
            "A",
            "deferred",
            3,
            "s",
            &[("a@one.test", ""), ("b@two.test", "")],
        );
        let b = entry("B", "deferred", 2000, "s", &[("c@one.test", "")]);
        let sh = shape(&[&a, &b], 1_000_000, 10);
        assert_eq!(sh.total.0, 3);
        assert_eq!(sh.domains[0].0, "one.test");
        assert_eq!(sh.domains[0].1, 2);
        assert_eq!(sh.domains[0].2[0], 1);
        assert_eq!(sh.domains[0].2[BUCKETS.len()], 1);
        assert_eq!(shape(&[&a, &b], 1_000_000, 1).domains.len(), 1);
        assert!(sh.text().contains("TOTAL"));
    }
}
