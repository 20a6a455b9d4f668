//! Runs code inside each role's real jail (`postern probe ROLE`, the same
//! jail spec the daemon uses) and checks what fails and what works.
use std::os::unix::fs::chown;
use std::time::Duration;

use postern_tests::{Instance, is_root};
use serde_json::Value;

fn probe(inst: &Instance, role: &str) -> Value {
    let out = inst.postern(&["probe", role]);
    assert!(
        out.status.success(),
        "probe {role}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe {role}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn ok(v: &Value, check: &str) -> bool {
    v["checks"][check]["ok"]
        .as_bool()
        .unwrap_or_else(|| panic!("no check {check} in {v}"))
}

/// (role, may read/write the queue directory, may create an AF_INET socket)
const ROLES: &[(&str, bool, bool)] = &[
    ("broker", true, false),
    ("smtpd", false, false),
    ("cleanup", false, false),
    ("qmgr", false, false),
    ("local", false, false),
    ("bounce", false, false),
    ("resolver", false, true),
    ("smtp", false, true),
    ("auth", false, false),
    ("pickup", false, false),
    ("sts", false, true),
];

#[test]
fn every_role_is_denied_what_it_must_not_do() {
    let inst = Instance::new("");
    let mut uids = std::collections::BTreeSet::new();
    for &(role, queue, inet) in ROLES {
        let v = probe(&inst, role);
        assert_eq!(v["landlock"], "fully_enforced", "{v}");
        assert_eq!(v["netns"], if inet { "shared" } else { "private" }, "{v}");
        for forbidden in [
            "open_shadow",
            "open_passwd",
            "read_data_dir",
            "execve",
            "fork",
            "ptrace_parent",
            "signal_parent",
            "setuid_root",
        ] {
            assert!(!ok(&v, forbidden), "{role} could {forbidden}: {v}");
        }
        assert_eq!(
            ok(&v, "read_queue_dir"),
            queue,
            "{role} read_queue_dir: {v}"
        );
        assert_eq!(
            ok(&v, "write_queue_dir"),
            queue,
            "{role} write_queue_dir: {v}"
        );
        assert_eq!(ok(&v, "inet_socket"), inet, "{role} inet_socket: {v}");
        // Only local may write beneath the mail spool.
        assert_eq!(
            ok(&v, "write_mail_spool"),
            role == "local",
            "{role} write_mail_spool: {v}"
        );
        for allowed in ["socketpair", "runtime", "alloc"] {
            assert!(ok(&v, allowed), "{role} cannot {allowed}: {v}");
        }
        if is_root() {
            let uid = v["uid"].as_u64().unwrap();
            assert_ne!(uid, 0);
            assert!(uids.insert(uid), "{role} shares uid {uid}");
        }
    }
}

#[test]
fn smtpd_cannot_open_the_queue_directory() {
    let inst = Instance::new("");
    let v = probe(&inst, "smtpd");
    let e = v["checks"]["read_queue_dir"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(!ok(&v, "read_queue_dir"), "{v}");
    assert!(e.contains("not permitted") || e.contains("denied"), "{e}");
}

/// Run as an ordinary user: everything works, only the uid split is lost.
#[test]
fn non_root_mode_keeps_every_other_protection() {
    if !is_root() {
        // Already unprivileged: the normal tests exercise this mode.
        return;
    }
    const NOBODY: u32 = 65534;
    // AUTH without TLS, so the test can wake the on-demand auth role.
    let mut inst = Instance::new("smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n");
    std::fs::create_dir_all(inst.data_dir()).unwrap();
    chown(inst.data_dir(), Some(NOBODY), Some(NOBODY)).unwrap();
    // The test's own log file is written by the master.
    std::fs::File::create(inst.log_path()).unwrap();
    chown(inst.log_path(), Some(NOBODY), Some(NOBODY)).unwrap();
    // The configuration directory is root's: root builds the aliases
    // there, as an admin would (the instance's user cannot write it).
    std::fs::write(inst.config_dir().join("aliases"), "postmaster: root\n").unwrap();
    // An external table, so that proxymap runs (and is checked) too.
    let tables = postern_tests::tablesrv::TableServer::start(
        &inst.ip,
        postern_tests::tablesrv::Protocol::Tcp,
        &[],
    );
    inst.add_main_cf(&format!(
        "transport_maps = tcp:{}:{}\n",
        inst.ip, tables.port
    ));
    inst.add_main_cf(postern_tests::WAKE_VERIFY);
    // The metrics role, so that it is checked as the instance's user too.
    inst.add_main_cf(&format!("metrics_listen = {}:9187\n", inst.ip));
    inst.add_postscreen();
    assert!(inst.postern(&["newaliases"]).status.success());
    inst.run_as = Some(NOBODY);
    // What the kernel allows an unprivileged user: a network namespace needs
    // a user namespace of its own.
    let userns = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "unshare",
            "-Urn",
            "true",
        ])
        .status()
        .unwrap()
        .success();
    inst.start();
    // bounce and auth start on first use: use them, then check every role.
    inst.wake_on_demand_roles();
    postern_tests::wait_for(
        "proxymap, verify, policy, milter and sts running",
        Duration::from_secs(30),
        || {
            inst.pid_of("proxymap")
                .and(inst.pid_of("verify"))
                .and(inst.pid_of("policy"))
                .and(inst.pid_of("milter"))
                .and(inst.pid_of("sts"))
        },
    );
    let st = inst.status();
    for p in st["processes"].as_array().unwrap() {
        assert_eq!(p["uid"], NOBODY, "{p}");
        if p["role"] == "master" {
            continue;
        }
        assert_eq!(p["no_new_privs"], true, "{p}");
        assert_eq!(p["seccomp"], 2, "{p}");
        assert_eq!(p["cap_eff"], "0000000000000000", "{p}");
        assert_eq!(p["landlock"], "fully_enforced", "{p}");
        let networked = ["smtp", "resolver", "proxymap", "policy", "milter", "sts"]
            .contains(&p["role"].as_str().unwrap_or(""));
        assert_eq!(
            p["netns"],
            if userns && !networked {
                "private"
            } else {
                "shared"
            },
            "{p}"
        );
    }
    let mut c = inst.smtp();
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("QUIT").starts_with("221"));
    let v = probe(&inst, "smtpd");
    assert!(
        !ok(&v, "open_shadow") && !ok(&v, "execve") && !ok(&v, "inet_socket"),
        "{v}"
    );
    inst.stop();
    std::thread::sleep(Duration::from_millis(10));
}
