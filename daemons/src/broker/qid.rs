//! Queue ids: long, time-sortable ids in Postfix's alphabet, stored inline.
/// A queue id, inline: ASCII letters and digits, at most 16.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Qid([u8; 16]);

impl Qid {
    pub fn new(s: &str) -> Option<Qid> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s.as_bytes());
        Some(Qid(b))
    }

    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|&c| c == 0).unwrap_or(16);
        std::str::from_utf8(&self.0[..n]).unwrap_or("")
    }
}

impl std::fmt::Debug for Qid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Long, time-sortable queue ids in Postfix's alphabet (no vowels): six
/// base-52 digits of seconds, four of microseconds, four of a counter.
#[derive(Default)]
pub struct QueueIdGen {
    counter: u64,
}

const ALPHABET: &[u8; 52] = b"0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";

fn base52(mut v: u64, width: usize, out: &mut String) {
    let mut buf = vec![b'0'; width];
    for slot in buf.iter_mut().rev() {
        *slot = ALPHABET[(v % 52) as usize];
        v /= 52;
    }
    out.push_str(std::str::from_utf8(&buf).expect("ascii"));
}

impl QueueIdGen {
    pub fn next(&mut self) -> Qid {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.counter = self.counter.wrapping_add(1);
        let mut s = String::with_capacity(14);
        base52(now.as_secs(), 6, &mut s);
        base52(u64::from(now.subsec_micros()), 4, &mut s);
        base52(self.counter % 52u64.pow(4), 4, &mut s);
        Qid::new(&s).expect("14 letters and digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let mut g = QueueIdGen::default();
        let a = g.next();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = g.next();
        assert!(a < b, "{a:?} {b:?}");
        assert_eq!(a.as_str().len(), 14);
        let many: std::collections::HashSet<Qid> = (0..10_000).map(|_| g.next()).collect();
        assert_eq!(many.len(), 10_000);
    }
}
