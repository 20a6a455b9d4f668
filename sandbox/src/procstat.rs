//! Reads a process's live protections from /proc/<pid>/status, so
//! `postern status` reports what the kernel enforces, not what we hoped.
use std::io;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub no_new_privs: bool,
    /// 0 = off, 1 = strict, 2 = filter.
    pub seccomp: u32,
    /// Number of seccomp filters stacked on the process (Seccomp_filters).
    pub seccomp_filters: u32,
    /// CapEff as the 16 hex digits the kernel prints.
    pub cap_eff: String,
    pub cap_bnd: String,
}

pub fn read(pid: u32) -> io::Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable status"))
}

/// The soft RLIMIT_NOFILE of a process, from /proc/<pid>/limits
/// (`u64::MAX` for unlimited).
pub fn nofile(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    parse_nofile(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no open files limit"))
}

/// `Max open files            1024                 524288               files`
pub fn parse_nofile(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

pub fn parse(text: &str) -> Option<ProcStatus> {
    let mut st = ProcStatus {
        uid: [0; 4],
        gid: [0; 4],
        no_new_privs: false,
        seccomp: 0,
        seccomp_filters: 0,
        cap_eff: String::new(),
        cap_bnd: String::new(),
    };
    let (mut seen_uid, mut seen_gid) = (false, false);
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.trim();
        match key {
            "Uid" | "Gid" => {
                let mut ids = [0u32; 4];
                let mut n = 0;
                for (slot, part) in ids.iter_mut().zip(val.split_whitespace()) {
                    *slot = part.parse().ok()?;
                    n += 1;
                }
                if n != 4 {
                    return None;
                }
                if key == "Uid" {
                    st.uid = ids;
                    seen_uid = true;
                } else {
                    st.gid = ids;
                    seen_gid = true;
                }
            }
            "NoNewPrivs" => st.no_new_privs = val == "1",
            "Seccomp" => st.seccomp = val.parse().ok()?,
            "Seccomp_filters" => st.seccomp_filters = val.parse().ok()?,
            "CapEff" => st.cap_eff = val.to_string(),
            "CapBnd" => st.cap_bnd = val.to_string(),
            _ => {}
        }
    }
    (seen_uid && seen_gid && !st.cap_eff.is_empty()).then_some(st)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_status() {
        let st = super::read(std::process::id()).unwrap();
        assert_eq!(st.cap_eff.len(), 16);
    }

    #[test]
    fn reads_the_descriptor_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             127636               127636               processes\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(super::parse_nofile(text), Some(1024));
        assert_eq!(
            super::parse_nofile(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
        assert_eq!(super::parse_nofile("garbage"), None);
        assert!(super::nofile(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn rejects_garbage() {
        assert!(super::parse("Uid: a b c d\nGid: 1 1 1 1\nCapEff: 0\n").is_none());
        assert!(super::parse("nothing here").is_none());
    }
}
