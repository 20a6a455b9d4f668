//! Restart policy: exponential backoff for a daemon that keeps dying, and
//! the crash-rate throttle (WISHLIST L52): a service whose process dies
//! abnormally on more than a set share of its recent connections is held
//! down for `service_throttle_time`, not restarted in a tight loop.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that ran this long is healthy again: backoff starts over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

pub fn next_backoff(prev: Duration, lived: Duration) -> Duration {
    if lived >= HEALTHY_AFTER || prev.is_zero() {
        MIN_BACKOFF
    } else {
        (prev * 2).min(MAX_BACKOFF)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Connection,
    /// A death while at least one connection was open.
    Crash,
}

/// Connections and crashes within a sliding window.
#[derive(Debug)]
pub struct CrashLedger {
    window: Duration,
    minimum: u32,
    percent: u32,
    events: VecDeque<(Instant, Ev)>,
}

/// Why a service is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub crashes: u32,
    pub connections: u32,
}

impl CrashLedger {
    pub fn new(window: Duration, minimum: u32, percent: u32) -> Self {
        Self {
            window,
            minimum,
            percent,
            events: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, _)) = self.events.front() {
            if now.duration_since(t) > self.window {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Records `n` connections accepted by `now`.
    pub fn connections(&mut self, now: Instant, n: u32) {
        self.expire(now);
        // Bounded: only counts matter, and a flood must not grow memory.
        for _ in 0..n.min(100_000) {
            if self.events.len() >= 100_000 {
                break;
            }
            self.events.push_back((now, Ev::Connection));
        }
    }

    /// Records a death; `during_connection` when a connection was open.
    /// Returns a verdict when the service must be throttled.
    pub fn crash(&mut self, now: Instant, during_connection: bool) -> Option<Verdict> {
        self.expire(now);
        if !during_connection {
            return None;
        }
        self.events.push_back((now, Ev::Crash));
        let crashes = self.events.iter().filter(|(_, e)| *e == Ev::Crash).count() as u32;
        let connections = self
            .events
            .iter()
            .filter(|(_, e)| *e == Ev::Connection)
            .count() as u32;
        (crashes >= self.minimum && crashes * 100 >= self.percent * connections.max(1)).then_some(
            Verdict {
                crashes,
                connections,
            },
        )
    }

    pub fn reset(&mut self) {
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets() {
        let mut d = Duration::ZERO;
        d = next_backoff(d, Duration::ZERO);
        assert_eq!(d, MIN_BACKOFF);
        for _ in 0..10 {
            d = next_backoff(d, Duration::from_millis(5));
        }
        assert_eq!(d, MAX_BACKOFF);
        assert_eq!(next_backoff(d, HEALTHY_AFTER), MIN_BACKOFF);
    }

    #[test]
    fn throttles_on_crash_share_not_on_single_crash() {
        let t0 = Instant::now();
        let mut l = CrashLedger::new(Duration::from_secs(300), 3, 50);
        // A busy, healthy service that crashes once in 100 connections.
        for i in 0..100 {
            l.connections(t0 + Duration::from_millis(i), 1);
        }
        assert!(l.crash(t0 + Duration::from_secs(1), true).is_none());
        // A service that dies on most connections.
        let mut l = CrashLedger::new(Duration::from_secs(300), 3, 50);
        let mut verdict = None;
        for i in 0..4 {
            let t = t0 + Duration::from_secs(i);
            l.connections(t, 1);
            verdict = verdict.or(l.crash(t, true));
        }
        assert_eq!(
            verdict,
            Some(Verdict {
                crashes: 3,
                connections: 3
            })
        );
        // Deaths with no connection open never throttle (kill -9 of an idle daemon).
        let mut l = CrashLedger::new(Duration::from_secs(300), 1, 1);
        assert!(l.crash(t0, false).is_none());
    }

    #[test]
    fn old_events_leave_the_window() {
        let t0 = Instant::now();
        let mut l = CrashLedger::new(Duration::from_secs(10), 2, 50);
        l.connections(t0, 1);
        assert!(l.crash(t0, true).is_none());
        l.connections(t0 + Duration::from_secs(60), 1);
        assert!(l.crash(t0 + Duration::from_secs(60), true).is_none());
    }
}
