//! What the metrics role keeps of the reports, and how it prints them in
//! the Prometheus text format 0.0.4 and in OpenMetrics 1.0.0.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use postern_config::Role;
use postern_ipc::metrics::Sample;
use postern_proto::http::Format;

use super::catalog::{self, BUCKETS, Family, Kind, Part};

/// A series: its name and label values.
type Series = (String, Vec<String>);

#[derive(Default)]
pub struct Store {
    /// The latest report of each open channel.
    live: HashMap<u64, Vec<Sample>>,
    /// Counters and histogram parts of channels that closed: a process
    /// that exits takes its gauges along, never its counts.
    retired: BTreeMap<Series, f64>,
}

/// Checks one report against the catalogue: any wrong series refuses the
/// whole report (and drops the channel).
pub fn check(from: Role, samples: &[Sample]) -> Result<(), String> {
    for s in samples {
        let Some((f, part)) = catalog::lookup(&s.name) else {
            return Err(format!("unknown series {}", s.name));
        };
        if !f.from.contains(&from) {
            return Err(format!("{from} may not report {}", f.name));
        }
        if s.labels.len() != part.label_count(f) {
            return Err(format!("{}: {} labels", s.name, s.labels.len()));
        }
        if part == Part::Bucket {
            let le = &s.labels[f.labels.len()];
            if le != "+Inf" && !BUCKETS.iter().any(|b| le_text(*b) == *le) {
                return Err(format!("{}: bucket le=\"{le}\"", s.name));
            }
        }
        if (f.kind == Kind::Counter || part != Part::Value) && s.value < 0.0 {
            return Err(format!("{}: negative count", s.name));
        }
    }
    Ok(())
}

/// A bucket bound as the label prints it (always with a decimal point, as
/// OpenMetrics' canonical numbers).
pub fn le_text(b: f64) -> String {
    if b.fract() == 0.0 {
        format!("{b:.1}")
    } else {
        b.to_string()
    }
}

fn is_count(s: &Sample) -> bool {
    catalog::lookup(&s.name).is_some_and(|(f, part)| f.kind == Kind::Counter || part != Part::Value)
}

impl Store {
    pub fn update(&mut self, channel: u64, samples: Vec<Sample>) {
        self.live.insert(channel, samples);
    }

    /// A channel closed: its counts stay, its gauges go.
    pub fn close(&mut self, channel: u64) {
        for s in self.live.remove(&channel).unwrap_or_default() {
            if is_count(&s) {
                *self.retired.entry((s.name, s.labels)).or_default() += s.value;
            }
        }
    }

    /// Adds to a counter the metrics role keeps itself.
    pub fn count_own(&mut self, f: &'static Family, labels: &[&str]) {
        let key = (
            f.name.to_string(),
            labels.iter().map(|l| l.to_string()).collect(),
        );
        *self.retired.entry(key).or_default() += 1.0;
    }

    /// Every series of `name`, summed over processes (age families: the
    /// oldest time, as seconds before `now`).
    fn merged(&self, name: &str, kind: Kind, now: f64) -> BTreeMap<Vec<String>, f64> {
        let mut out: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        if kind != Kind::Age {
            for ((n, l), v) in self.retired.range((name.to_string(), Vec::new())..) {
                if n != name {
                    break;
                }
                *out.entry(l.clone()).or_default() += v;
            }
        }
        for s in self.live.values().flatten().filter(|s| s.name == name) {
            match kind {
                Kind::Age => {
                    let e = out.entry(s.labels.clone()).or_insert(s.value);
                    *e = e.min(s.value);
                }
                _ => *out.entry(s.labels.clone()).or_default() += s.value,
            }
        }
        if kind == Kind::Age {
            for v in out.values_mut() {
                *v = (now - *v).max(0.0);
            }
        }
        out
    }

    /// The whole exposition.
    pub fn render(&self, format: Format, now: f64) -> String {
        let mut out = String::with_capacity(8192);
        let om = format == Format::OpenMetrics;
        let version = env!("CARGO_PKG_VERSION");
        let info = if om {
            "postern_build"
        } else {
            "postern_build_info"
        };
        let _ = writeln!(
            out,
            "# HELP {info} Postern's version; always 1.\n# TYPE {info} {}\npostern_build_info{{version=\"{version}\"}} 1",
            if om { "info" } else { "gauge" }
        );
        for f in catalog::ALL {
            let family = if om && f.kind == Kind::Counter {
                f.name.trim_end_matches("_total")
            } else {
                f.name
            };
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge | Kind::Age => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {family} {}", escape_help(f.help));
            let _ = writeln!(out, "# TYPE {family} {kind}");
            if om && matches!(f.kind, Kind::Age | Kind::Histogram) {
                let _ = writeln!(out, "# UNIT {family} seconds");
            }
            if f.kind != Kind::Histogram {
                for (labels, v) in self.merged(f.name, f.kind, now) {
                    line(&mut out, f.name, f.labels, &labels, v);
                }
                continue;
            }
            let buckets = self.merged(&format!("{}_bucket", f.name), f.kind, now);
            let sums = self.merged(&format!("{}_sum", f.name), f.kind, now);
            let counts = self.merged(&format!("{}_count", f.name), f.kind, now);
            let mut names: Vec<&str> = f.labels.to_vec();
            names.push("le");
            for (base, count) in &counts {
                for le in BUCKETS.iter().map(|b| le_text(*b)).chain(["+Inf".into()]) {
                    let mut l = base.clone();
                    l.push(le);
                    let v = if l.last().is_some_and(|x| x == "+Inf") {
                        *count
                    } else {
                        buckets.get(&l).copied().unwrap_or(0.0)
                    };
                    line(&mut out, &format!("{}_bucket", f.name), &names, &l, v);
                }
                let sum = sums.get(base).copied().unwrap_or(0.0);
                line(&mut out, &format!("{}_sum", f.name), f.labels, base, sum);
                line(
                    &mut out,
                    &format!("{}_count", f.name),
                    f.labels,
                    base,
                    *count,
                );
            }
        }
        if om {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn line(out: &mut String, name: &str, names: &[&str], values: &[String], v: f64) {
    out.push_str(name);
    if !names.is_empty() {
        out.push('{');
        for (i, (n, val)) in names.iter().zip(values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{n}=\"{}\"", escape_label(val));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(v));
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[&str], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            value,
        }
    }

    #[test]
    fn counters_survive_a_process_and_gauges_leave_with_it() {
        let mut st = Store::default();
        let q = sample("postern_recipients_total", &["sent", "smtp", "2"], 3.0);
        let g = sample("postern_queue_messages", &["deferred"], 5.0);
        st.update(1, vec![q.clone(), g.clone()]);
        st.update(
            2,
            vec![sample(
                "postern_recipients_total",
                &["sent", "smtp", "2"],
                1.0,
            )],
        );
        let text = st.render(Format::Text, 0.0);
        assert!(
            text.contains(
                "postern_recipients_total{status=\"sent\",transport=\"smtp\",dsn_class=\"2\"} 4\n"
            ),
            "{text}"
        );
        assert!(text.contains("postern_queue_messages{queue=\"deferred\"} 5\n"));
        st.close(1);
        st.update(
            3,
            vec![sample(
                "postern_recipients_total",
                &["sent", "smtp", "2"],
                2.0,
            )],
        );
        let text = st.render(Format::Text, 0.0);
        assert!(text.contains("dsn_class=\"2\"} 6\n"), "{text}");
        assert!(!text.contains("postern_queue_messages{"));
    }

    #[test]
    fn the_oldest_age_grows_with_the_clock() {
        let mut st = Store::default();
        st.update(
            1,
            vec![sample(
                "postern_queue_oldest_message_age_seconds",
                &["deferred"],
                1000.0,
            )],
        );
        for (now, want) in [(1000.0, "0"), (1060.0, "60"), (2000.5, "1000.5")] {
            let t = st.render(Format::Text, now);
            let want =
                format!("postern_queue_oldest_message_age_seconds{{queue=\"deferred\"}} {want}\n");
            assert!(t.contains(&want), "{t}");
        }
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let mut st = Store::default();
        st.update(
            1,
            vec![sample(
                "postern_rejects_total",
                &["rcpt", "reject_unauth_destination"],
                2.0,
            )],
        );
        let t = st.render(Format::OpenMetrics, 0.0);
        assert!(t.contains("# TYPE postern_rejects counter\n"), "{t}");
        assert!(t.contains(
            "postern_rejects_total{stage=\"rcpt\",check=\"reject_unauth_destination\"} 2\n"
        ));
        assert!(t.ends_with("# EOF\n"));
        let t = st.render(Format::Text, 0.0);
        assert!(t.contains("# TYPE postern_rejects_total counter\n"));
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn reports_are_checked_against_the_catalogue() {
        let ok = [sample("postern_smtp_sessions", &["smtp"], 2.0)];
        assert!(check(Role::Smtpd, &ok).is_ok());
        assert!(
            check(Role::Qmgr, &ok).is_err(),
            "qmgr does not keep sessions"
        );
        assert!(check(Role::Smtpd, &[sample("postern_smtp_sessions", &[], 1.0)]).is_err());
        assert!(check(Role::Smtpd, &[sample("postern_nosuch", &["x"], 1.0)]).is_err());
        assert!(
            check(
                Role::Smtpd,
                &[sample("postern_rejects_total", &["rcpt", "x"], -1.0)]
            )
            .is_err()
        );
        let b = |le: &str| {
            [sample(
                "postern_delivery_latency_seconds_bucket",
                &[le],
                1.0,
            )]
        };
        assert!(check(Role::Qmgr, &b("1.0")).is_ok());
        assert!(check(Role::Qmgr, &b("+Inf")).is_ok());
        assert!(check(Role::Qmgr, &b("1")).is_err());
        assert!(
            check(
                Role::Qmgr,
                &[sample("postern_ipc_violations_total", &["deliver"], 1.0)]
            )
            .is_ok()
        );
    }
}
