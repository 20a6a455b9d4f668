//! Scheduling arithmetic: backoff between retries, and the keys of the
//! transport table. Pure functions, tested on their own.
use std::time::Duration;

/// The delay before attempt `attempts + 1`: doubling from the minimal to
/// the maximal backoff time, then jittered by up to a quarter either way
/// (so a burst of deferrals does not retry in lockstep; L1086) and kept
/// within the bounds.
pub fn backoff(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp.min(20)).min(max);
    let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
    let d = base.mul_f64(factor);
    d.clamp(min.min(max), max)
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Local,
    /// The smtp client, with its next hop: `[host]:port`, `host`, a domain.
    Smtp(String),
    /// transport_maps said `error:`: bounce with this text.
    Error(String),
    /// transport_maps said `discard:`: done without delivery.
    Discard,
    /// transport_maps could not be read, or named a transport Postern does
    /// not have: try again later (Postfix: "mail transport unavailable").
    Defer(String),
}

/// The keys Postfix's transport(5) tries, in order: the address, the
/// domain, each parent domain as ".parent", then "*".
pub fn transport_keys(address: &str, domain: &str) -> Vec<String> {
    let mut keys = vec![address.to_ascii_lowercase()];
    if !domain.is_empty() {
        keys.push(domain.to_ascii_lowercase());
        let mut d = domain;
        while let Some((_, parent)) = d.split_once('.') {
            keys.push(format!(".{}", parent.to_ascii_lowercase()));
            d = parent;
        }
    }
    keys.push("*".into());
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_and_jitters() {
        let (min, max) = (Duration::from_secs(300), Duration::from_secs(4000));
        assert_eq!(backoff(1, min, max, 0.5), min);
        assert_eq!(backoff(2, min, max, 0.5), Duration::from_secs(600));
        assert_eq!(backoff(3, min, max, 0.5), Duration::from_secs(1200));
        assert_eq!(backoff(10, min, max, 0.5), max);
        for j in [0.0, 0.3, 0.99, 1.0] {
            let d = backoff(3, min, max, j);
            assert!(
                d >= Duration::from_secs(900) && d <= Duration::from_secs(1500),
                "{d:?}"
            );
            assert!(backoff(1, min, max, j) >= min && backoff(40, min, max, j) <= max);
        }
        // Jitter spreads retries.
        assert_ne!(backoff(2, min, max, 0.0), backoff(2, min, max, 1.0));
    }

    #[test]
    fn transports() {
        assert_eq!(
            transport_keys("u@a.b.example", "a.b.example"),
            vec![
                "u@a.b.example",
                "a.b.example",
                ".b.example",
                ".example",
                "*"
            ]
        );
    }
}
