//! A DNSSEC-signed test hierarchy on loopback: Debian's knot serves the
//! zones (signing those asked for, with a key it makes), and Debian's
//! unbound, a real validating resolver, sits in front of it with trust
//! anchors for the signed zones. Postern asks unbound (dns_nameservers)
//! and trusts its AD bit, as it would a local validating resolver.
//!
//! Zones under `test.`: each [`Zone`] is signed with a trust anchor
//! (`Anchored`), signed without one (`Child`: its parent must publish a
//! DS record for it, or a wrong one to make it bogus), or not signed.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{unique_loopback, wait_for};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Signed; unbound trusts its key (a trust anchor).
    Anchored,
    /// Signed; trusted only through a DS record in its parent.
    Child,
    Unsigned,
}

pub struct Zone<'a> {
    /// e.g. "dane.test."
    pub origin: &'a str,
    /// Records, relative to the origin (SOA and NS are added).
    pub records: &'a str,
    pub signing: Signing,
}

pub struct Dnssec {
    /// The validating resolver's address (port 53): dns_nameservers.
    pub resolver: String,
    /// The authoritative server's address (port 53).
    pub authoritative: String,
    knot: Child,
    unbound: Child,
    dir: PathBuf,
}

impl Drop for Dnssec {
    fn drop(&mut self) {
        for c in [&mut self.knot, &mut self.unbound] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Dnssec {
    /// Starts knot and unbound for `zones` (plus an unsigned `test.` that
    /// delegates to each) under `dir`.
    pub fn start(dir: &Path, zones: &[Zone<'_>]) -> Dnssec {
        let auth = unique_loopback();
        let resolver = unique_loopback();
        let zdir = dir.join("zones");
        std::fs::create_dir_all(&zdir).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let soa = |origin: &str| {
            format!(
                "$ORIGIN {origin}\n@ 60 IN SOA ns.test. admin.test. 1 3600 600 86400 30\n\
                 @ 60 IN NS ns.test.\n"
            )
        };
        let mut test = soa("test.");
        test.push_str(&format!("ns 60 IN A {auth}\n"));
        for z in zones {
            let label = z.origin.trim_end_matches("test.").trim_end_matches('.');
            if !label.contains('.') {
                test.push_str(&format!("{label} 60 IN NS ns.test.\n"));
            }
        }
        std::fs::write(zdir.join("test.zone"), test).unwrap();
        let mut conf = format!(
            "server:\n    rundir: \"{run}\"\n    listen: {auth}@53\n\
             database:\n    storage: \"{db}\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             policy:\n  - id: csk\n    algorithm: ecdsap256sha256\n    single-type-signing: on\n\
             template:\n  - id: default\n    storage: \"{z}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n\
             zone:\n  - domain: test.\n",
            run = dir.join("run").display(),
            db = dir.join("db").display(),
            z = zdir.display(),
        );
        for z in zones {
            std::fs::write(
                zdir.join(format!("{}zone", z.origin)),
                format!("{}{}\n", soa(z.origin), z.records),
            )
            .unwrap();
            conf.push_str(&format!("  - domain: {}\n", z.origin));
            if z.signing != Signing::Unsigned {
                conf.push_str("    dnssec-signing: on\n    dnssec-policy: csk\n");
            }
        }
        let knot_conf = dir.join("knot.conf");
        std::fs::write(&knot_conf, conf).unwrap();
        let knot = Command::new("knotd")
            .arg("-c")
            .arg(&knot_conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("knot.log")).unwrap())
            .spawn()
            .expect("start knotd (apt-get install knot)");
        // Each signed zone answers with signatures once knot signed it.
        for z in zones.iter().filter(|z| z.signing != Signing::Unsigned) {
            wait_for(
                &format!("knot signing {}", z.origin),
                Duration::from_secs(30),
                || {
                    let out = Command::new("kdig")
                        .args([&format!("@{auth}"), "+dnssec", "+norec", "SOA", z.origin])
                        .output()
                        .ok()?;
                    String::from_utf8_lossy(&out.stdout)
                        .contains("RRSIG")
                        .then_some(())
                },
            );
        }
        let mut anchors = String::new();
        for z in zones.iter().filter(|z| z.signing == Signing::Anchored) {
            let ds = run(Command::new("keymgr")
                .arg("-c")
                .arg(&knot_conf)
                .args([z.origin, "ds"]));
            // "dane.test. DS 12345 13 2 ABCD..." (SHA-256 digest type).
            let line = ds
                .lines()
                .find(|l| l.split_whitespace().nth(4) == Some("2"))
                .unwrap_or_else(|| panic!("keymgr ds {}: {ds}", z.origin));
            anchors.push_str(&format!("    trust-anchor: \"{}\"\n", line.trim()));
        }
        let unbound_conf = dir.join("unbound.conf");
        std::fs::write(
            &unbound_conf,
            format!(
                "server:\n    interface: {resolver}\n    port: 53\n    do-not-query-localhost: no\n\
                 \x20   username: \"\"\n    chroot: \"\"\n    directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n\
                 \x20   use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    val-log-level: 2\n\
                 \x20   num-threads: 1\n    access-control: 127.0.0.0/8 allow\n\
                 \x20   module-config: \"validator iterator\"\n    qname-minimisation: no\n\
                 \x20   local-zone: \"test.\" nodefault\n\
                 {anchors}\
                 stub-zone:\n    name: \"test.\"\n    stub-addr: {auth}@53\n",
                d = dir.display(),
            ),
        )
        .unwrap();
        let unbound = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&unbound_conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("unbound.log")).unwrap())
            .spawn()
            .expect("start unbound (apt-get install unbound)");
        let d = Dnssec {
            resolver,
            authoritative: auth,
            knot,
            unbound,
            dir: dir.to_path_buf(),
        };
        // The first anchored zone validates through unbound.
        if let Some(z) = zones.iter().find(|z| z.signing == Signing::Anchored) {
            wait_for(
                &format!("unbound validating {}", z.origin),
                Duration::from_secs(30),
                || d.flags(z.origin, "SOA").contains(" ad").then_some(()),
            );
        }
        d
    }

    /// kdig's header flags line for a question to the validating
    /// resolver (e.g. ";; Flags: qr rd ra ad; QUERY: 1; ..."), and its
    /// status; for diagnostics and for waiting.
    pub fn flags(&self, name: &str, rtype: &str) -> String {
        let out = Command::new("kdig")
            .args([&format!("@{}", self.resolver), "+dnssec", rtype, name])
            .output()
            .expect("kdig (apt-get install knot-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(";; Flags:") || l.contains("status:"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The servers' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["knot.log", "unbound.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
