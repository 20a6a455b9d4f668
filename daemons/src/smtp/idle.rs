//! The smtp client's cache of idle sessions, per next hop (L768, L929).
use std::time::Instant;

use super::Smtp;
use super::session::Session;

impl Smtp {
    pub(super) async fn expire_idle(&self) {
        let stale: Vec<Session> = {
            let mut cache = self.cache.borrow_mut();
            let mut out = Vec::new();
            for list in cache.values_mut() {
                let (keep, old): (Vec<_>, Vec<_>) = list
                    .drain(..)
                    .partition(|(_, t)| t.elapsed() < self.s.cache_idle);
                *list = keep;
                out.extend(old.into_iter().map(|(s, _)| s));
            }
            cache.retain(|_, v| !v.is_empty());
            out
        };
        for s in stale {
            s.quit().await;
        }
    }

    pub(super) fn take_cached(&self, nexthop: &str) -> Option<Session> {
        let mut cache = self.cache.borrow_mut();
        let list = cache.get_mut(nexthop)?;
        let s = list.pop().map(|(s, _)| s);
        if list.is_empty() {
            cache.remove(nexthop);
        }
        s
    }

    /// Keeps an idle session, within the cache's size cap (L929).
    pub(super) async fn put_cached(&self, nexthop: &str, s: Session) {
        let total: usize = self.cache.borrow().values().map(Vec::len).sum();
        if total >= self.s.cache_size || s.started.elapsed() >= self.s.reuse_time {
            s.quit().await;
            return;
        }
        self.cache
            .borrow_mut()
            .entry(nexthop.to_string())
            .or_default()
            .push((s, Instant::now()));
    }
}
