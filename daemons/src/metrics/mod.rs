//! The figures a process keeps, and the task that reports them to the
//! metrics role. Off (every call returns at once) unless `metrics_listen`
//! is set: then each process keeps its counters, gauges and histograms in
//! memory and sends the whole set at most once a [`PUSH_EVERY`], only when
//! something changed (and every [`REFRESH_EVERY`] regardless, so that a
//! restarted metrics role learns it). A report is the process's complete
//! state, so one that is lost costs nothing.
pub mod catalog;
mod render;
pub mod serve;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postern_config::{Params, Role};
use postern_ipc::edge::{self, ClientEnd};
use postern_ipc::metrics::{self as wire, Link, Sample};
use tokio::sync::mpsc;

use catalog::{BUCKETS, Family, Kind};

/// How often a changed state is reported.
pub const PUSH_EVERY: Duration = Duration::from_secs(1);
/// How often an unchanged, non-empty state is reported anyway.
const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// The most a process's series may weigh (names and labels), so a report
/// always fits the edge's frame; series past it are not kept.
const MAX_BYTES: usize = 192 * 1024;

static ON: AtomicBool = AtomicBool::new(false);
static REG: Mutex<Registry> = Mutex::new(Registry::new());

type Key = (&'static str, Vec<String>);

enum Value {
    Num(f64),
    Hist(Box<Hist>),
}

struct Hist {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

struct Registry {
    series: BTreeMap<Key, Value>,
    bytes: usize,
    dirty: bool,
    /// Series not kept because of [`MAX_BYTES`] (logged once).
    refused: u64,
}

impl Registry {
    const fn new() -> Registry {
        Registry {
            series: BTreeMap::new(),
            bytes: 0,
            dirty: false,
            refused: 0,
        }
    }

    fn entry(
        &mut self,
        f: &'static Family,
        labels: &[&str],
        init: fn() -> Value,
    ) -> Option<&mut Value> {
        debug_assert_eq!(labels.len(), f.labels.len(), "{}", f.name);
        let key: Key = (
            f.name,
            labels
                .iter()
                .map(|l| postern_ipc::frame::clip(l, wire::MAX_LABEL).to_string())
                .collect(),
        );
        if !self.series.contains_key(&key) {
            self.dirty = true;
            let weight = weight(f.name, &key.1);
            if self.bytes + weight > MAX_BYTES || self.series.len() >= wire::MAX_SAMPLES / 4 {
                self.refused += 1;
                if self.refused == 1 {
                    crate::warn!(
                        "too many metric series; {} {:?} and later ones are not kept",
                        f.name,
                        key.1
                    );
                }
                return None;
            }
            self.bytes += weight;
            self.series.insert(key.clone(), init());
        }
        self.series.get_mut(&key)
    }

    fn snapshot(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for ((name, labels), v) in &self.series {
            match v {
                Value::Num(x) => out.push(Sample {
                    name: (*name).to_string(),
                    labels: labels.clone(),
                    value: *x,
                }),
                Value::Hist(h) => {
                    let mut cumulative = 0;
                    for (i, le) in BUCKETS
                        .iter()
                        .map(|b| render::le_text(*b))
                        .chain(["+Inf".to_string()])
                        .enumerate()
                    {
                        cumulative += h.buckets.get(i).copied().unwrap_or(0);
                        let total = if i == BUCKETS.len() {
                            h.count
                        } else {
                            cumulative
                        };
                        let mut l = labels.clone();
                        l.push(le);
                        out.push(Sample {
                            name: format!("{name}_bucket"),
                            labels: l,
                            value: total as f64,
                        });
                    }
                    out.push(Sample {
                        name: format!("{name}_sum"),
                        labels: labels.clone(),
                        value: h.sum,
                    });
                    out.push(Sample {
                        name: format!("{name}_count"),
                        labels: labels.clone(),
                        value: h.count as f64,
                    });
                }
            }
        }
        out
    }
}

/// What a series counts against [`MAX_BYTES`]: its name, its labels, and
/// the frame's overhead for them.
fn weight(name: &str, labels: &[String]) -> usize {
    name.len() + labels.iter().map(|l| l.len() + 8).sum::<usize>() + 32
}

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
    if !ON.load(Ordering::Relaxed) {
        return None;
    }
    let mut r = REG.lock().unwrap_or_else(|e| e.into_inner());
    Some(f(&mut r))
}

/// Adds one to a counter.
pub fn inc(f: &'static Family, labels: &[&str]) {
    add(f, labels, 1.0);
}

/// Adds `n` to a counter.
pub fn add(f: &'static Family, labels: &[&str], n: f64) {
    debug_assert_eq!(f.kind, Kind::Counter);
    with(|r| {
        if let Some(Value::Num(x)) = r.entry(f, labels, || Value::Num(0.0)) {
            *x += n;
            r.dirty = true;
        }
    });
}

/// Moves a gauge by `d` (open sessions).
pub fn shift(f: &'static Family, labels: &[&str], d: f64) {
    debug_assert_eq!(f.kind, Kind::Gauge);
    with(|r| {
        if let Some(Value::Num(x)) = r.entry(f, labels, || Value::Num(0.0)) {
            *x += d;
            r.dirty = true;
        }
    });
}

/// Replaces every series of a gauge family (a top-N list, the queue
/// figures): series not given are gone.
pub fn replace(f: &'static Family, series: &[(Vec<String>, f64)]) {
    debug_assert!(matches!(f.kind, Kind::Gauge | Kind::Age));
    with(|r| {
        let old: Vec<(Vec<String>, f64)> = r
            .series
            .iter()
            .filter(|((n, _), _)| *n == f.name)
            .filter_map(|((_, l), v)| match v {
                Value::Num(x) => Some((l.clone(), *x)),
                Value::Hist(_) => None,
            })
            .collect();
        if old.as_slice() == series {
            return;
        }
        let gone: Vec<Key> = r
            .series
            .keys()
            .filter(|(n, _)| *n == f.name)
            .cloned()
            .collect();
        for k in gone {
            r.series.remove(&k);
            r.bytes = r.bytes.saturating_sub(weight(f.name, &k.1));
        }
        for (labels, v) in series {
            let ls: Vec<&str> = labels.iter().map(String::as_str).collect();
            if let Some(Value::Num(x)) = r.entry(f, &ls, || Value::Num(0.0)) {
                *x = *v;
            }
        }
        r.dirty = true;
    });
}

/// Records one observation of a histogram, in seconds.
pub fn observe(f: &'static Family, labels: &[&str], seconds: f64) {
    debug_assert_eq!(f.kind, Kind::Histogram);
    if !seconds.is_finite() {
        return;
    }
    let seconds = seconds.max(0.0);
    with(|r| {
        let init = || {
            Value::Hist(Box::new(Hist {
                buckets: [0; BUCKETS.len()],
                sum: 0.0,
                count: 0,
            }))
        };
        if let Some(Value::Hist(h)) = r.entry(f, labels, init) {
            if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
                h.buckets[i] += 1;
            }
            h.sum += seconds;
            h.count += 1;
            r.dirty = true;
        }
    });
}

/// The role this process runs (set by [`start`]).
static ROLE: std::sync::OnceLock<Role> = std::sync::OnceLock::new();

/// A message queued by this process for local reasons: pickup (sendmail),
/// bounce (notices), local (forwarding).
pub fn received_locally() {
    let name = match ROLE.get() {
        Some(Role::Pickup) => "pickup",
        Some(Role::Bounce) => "bounce",
        Some(Role::Local) => "local",
        _ => return,
    };
    inc(&catalog::RECEIVED, &[name, name]);
}

/// Is the endpoint configured (so figures are worth computing)?
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The state to report, if it changed or `force`.
fn take_report(force: bool) -> Option<wire::Request> {
    with(|r| {
        let due = r.dirty || (force && !r.series.is_empty());
        if !due {
            return None;
        }
        r.dirty = false;
        Some(wire::Request {
            samples: r.snapshot(),
        })
    })
    .flatten()
}

fn mark_dirty() {
    with(|r| r.dirty = true);
}

/// Where a process's reports go.
pub enum Uplink {
    /// A channel to the metrics role, asked of the master.
    Switchboard(crate::daemon::Switchboard),
    /// Channels the master made itself (its own figures).
    Given(mpsc::UnboundedReceiver<OwnedFd>),
}

/// Turns the figures on when `metrics_listen` is set, and starts
/// reporting them. Call once per process, inside its runtime.
pub fn start(role: Role, params: &Params, uplink: Uplink) {
    if params.str("metrics_listen").is_empty() || role == Role::Metrics {
        return;
    }
    ON.store(true, Ordering::Relaxed);
    let _ = ROLE.set(role);
    let timeout = params
        .duration("ipc_query_timeout")
        .unwrap_or(Duration::from_secs(10));
    tokio::spawn(report(uplink, timeout));
}

async fn report(mut uplink: Uplink, timeout: Duration) {
    let mut ep: Option<ClientEnd<Link>> = None;
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(PUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut force = last.elapsed() >= REFRESH_EVERY;
        if let Uplink::Given(rx) = &mut uplink {
            while let Ok(fd) = rx.try_recv() {
                ep = edge::open::<Link>(fd, timeout).await.ok();
                force = true;
            }
        }
        let Some(req) = take_report(force) else {
            continue;
        };
        if ep.is_none()
            && let Uplink::Switchboard(sb) = &uplink
        {
            ep = crate::edges::open::<Link>(sb, Role::Metrics, timeout)
                .await
                .ok();
        }
        let sent = match ep.as_mut() {
            Some(e) => e.send(&req).await.is_ok() && e.recv().await.is_ok(),
            None => false,
        };
        if sent {
            last = Instant::now();
        } else {
            // Said again, in full, on the next channel.
            ep = None;
            mark_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_reports_cumulative_buckets() {
        let mut r = Registry::new();
        for s in [0.005, 0.3, 2.0, 1e9] {
            let init = || {
                Value::Hist(Box::new(Hist {
                    buckets: [0; BUCKETS.len()],
                    sum: 0.0,
                    count: 0,
                }))
            };
            if let Some(Value::Hist(h)) = r.entry(&catalog::LATENCY, &[], init) {
                if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
                    h.buckets[i] += 1;
                }
                h.sum += s;
                h.count += 1;
            }
        }
        let snap = r.snapshot();
        let bucket = |le: &str| {
            let le = if le.contains('.') || le == "+Inf" {
                le.to_string()
            } else {
                format!("{le}.0")
            };
            snap.iter()
                .find(|s| s.name.ends_with("_bucket") && s.labels == [le.clone()])
                .map(|s| s.value)
        };
        assert_eq!(bucket("0.01"), Some(1.0));
        assert_eq!(bucket("0.5"), Some(2.0));
        assert_eq!(bucket("432000"), Some(3.0));
        assert_eq!(bucket("+Inf"), Some(4.0));
        let count = snap
            .iter()
            .find(|s| s.name.ends_with("_count"))
            .map(|s| s.value);
        assert_eq!(count, Some(4.0));
    }
}
