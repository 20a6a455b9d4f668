//! The foundation: every daemon jailed in its own process, supervision,
//! reload, the control socket, and the configuration checker.
use std::collections::BTreeSet;
use std::time::Duration;

use postern_tests::{Instance, is_root, wait_for};

const ROLES: &[&str] = &[
    "broker", "smtpd", "cleanup", "qmgr", "local", "bounce", "resolver", "smtp", "auth", "pickup",
    "cache",
];
/// Roles the master starts on first use, not at start-up.
const ON_DEMAND: &[&str] = &["bounce", "auth", "cache", "proxymap", "verify", "pickup"];
/// An instance where AUTH works without TLS, so a test can wake auth.
const AUTH_IN_CLEAR: &str = "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n";

/// The status entry of `role`.
fn process<'a>(st: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == role)
        .unwrap_or_else(|| panic!("{role} missing: {st}"))
}

/// After start, the on-demand roles are listed as such, with no process.
fn assert_on_demand_idle(inst: &Instance) {
    let st = inst.status();
    for r in ON_DEMAND {
        let p = process(&st, r);
        assert_eq!(p["state"], "on demand", "{p}");
        assert_eq!(p["pid"], 0, "{p}");
    }
}

#[test]
fn on_demand_roles_start_on_first_use_and_run_jailed() {
    let mut inst = Instance::new(AUTH_IN_CLEAR);
    inst.start();
    assert_on_demand_idle(&inst);
    // Still idle a moment later, and after mail that needs neither.
    let r = inst.greeted().send_mail(
        "a@example.org",
        &["root@localhost"],
        "Subject: plain\r\n\r\nhi\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    std::thread::sleep(Duration::from_secs(1));
    assert_on_demand_idle(&inst);
    inst.wake_on_demand_roles();
    inst.wait_log(
        "starting bounce on first use (asked by qmgr)",
        Duration::from_secs(5),
    );
    inst.wait_log(
        "starting auth on first use (asked by smtpd)",
        Duration::from_secs(5),
    );
    // sendmail's connection to the public socket wakes pickup.
    inst.wait_log(
        "starting pickup on first use (work is waiting)",
        Duration::from_secs(5),
    );
    // A reload restarts them like any other role once they have run.
    let before = (inst.pid_of("bounce"), inst.pid_of("auth"));
    let out = inst.postern(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("bounce and auth restarted", Duration::from_secs(20), || {
        let now = (inst.pid_of("bounce"), inst.pid_of("auth"));
        (now.0.is_some() && now.1.is_some() && now.0 != before.0 && now.1 != before.1).then_some(())
    });
}

#[test]
fn every_daemon_runs_jailed_in_its_own_process() {
    // An external table (a tcp: transport map that finds nothing) makes
    // qmgr wake proxymap too.
    let inst = Instance::new(AUTH_IN_CLEAR);
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
    inst.add_postscreen();
    let mut inst = inst;
    inst.start();
    assert_on_demand_idle(&inst);
    inst.wake_on_demand_roles();
    wait_for(
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
    let ps = st["processes"].as_array().unwrap();
    let roles: BTreeSet<&str> = ps.iter().map(|p| p["role"].as_str().unwrap()).collect();
    for r in ROLES
        .iter()
        .chain(&["master", "proxymap", "verify", "policy", "milter", "sts"])
    {
        assert!(roles.contains(r), "{r} missing from {st}");
    }
    let mut uids = BTreeSet::new();
    let mut pids = BTreeSet::new();
    for p in ps {
        // Off in this configuration (metrics without metrics_listen).
        if p["state"] == "off" {
            continue;
        }
        assert!(pids.insert(p["pid"].as_u64().unwrap()), "pid shared: {st}");
        if p["role"] == "master" {
            continue;
        }
        assert_eq!(p["no_new_privs"], true, "{p}");
        assert_eq!(p["seccomp"], 2, "{p}");
        assert_eq!(p["cap_eff"], "0000000000000000", "{p}");
        assert_eq!(p["landlock"], "fully_enforced", "{p}");
        // Only the roles that talk to the network share the host's.
        let networked = ["smtp", "resolver", "proxymap", "policy", "milter", "sts"]
            .contains(&p["role"].as_str().unwrap_or(""));
        assert_eq!(
            p["netns"],
            if networked { "shared" } else { "private" },
            "{p}"
        );
        if is_root() {
            let uid = p["uid"].as_u64().unwrap();
            assert_ne!(uid, 0, "{p}");
            assert!(uids.insert(uid), "uid {uid} shared by two roles: {st}");
        }
    }
    // The human-readable form lists the same processes.
    let out = inst.postern(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for r in ROLES {
        assert!(text.lines().any(|l| l.starts_with(r)), "{text}");
    }
    inst.stop();
}

/// The scheduling policy of a process's main thread, from /proc/PID/sched
/// (0 normal, 3 batch).
fn sched_policy(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/sched"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("policy")?
                .split(':')
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
        .expect("a policy line")
}

#[test]
fn daemons_run_with_batch_scheduling_unless_told_otherwise() {
    let inst = Instance::started("");
    for role in ["smtpd", "cleanup", "broker", "qmgr", "smtp"] {
        let pid = inst.pid_of(role).expect(role);
        assert_eq!(sched_policy(pid), 3, "{role} is not SCHED_BATCH");
    }
    assert_eq!(sched_policy(inst.master_pid()), 3);
    let inst = Instance::started("daemon_scheduling_policy = normal\n");
    assert_eq!(sched_policy(inst.pid_of("smtpd").expect("smtpd")), 0);
}

#[test]
fn a_killed_daemon_is_running_again_within_seconds() {
    let mut inst = Instance::new(AUTH_IN_CLEAR);
    inst.start();
    inst.wake_on_demand_roles();
    for role in ROLES {
        let old = inst.pid_of(role).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let new = wait_for(&format!("{role} restarted"), Duration::from_secs(5), || {
            inst.pid_of(role).filter(|&p| p != old)
        });
        assert_ne!(new, old);
        inst.wait_log(
            &format!("{role} pid {old} killed by signal 9"),
            Duration::from_secs(5),
        );
    }
    inst.wait_running();
    inst.stop();
}

#[test]
fn a_service_that_crashes_on_most_connections_is_throttled() {
    let mut inst = Instance::new(
        "service_throttle_time = 4s\nservice_crash_throttle_minimum = 3\nservice_crash_throttle_percent = 50\n",
    );
    inst.start();
    for _ in 0..3 {
        // A connection is open when the process dies: a crash on a connection.
        let pid = wait_for("smtpd running", Duration::from_secs(10), || {
            inst.pid_of("smtpd")
        });
        let mut c = inst.smtp();
        assert!(c.reply().starts_with("220 "));
        // The master counts the connection before we pull the plug.
        std::thread::sleep(Duration::from_millis(200));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert!(c.closed());
        wait_for("smtpd gone", Duration::from_secs(5), || {
            (inst.pid_of("smtpd") != Some(pid)).then_some(())
        });
    }
    inst.wait_log(
        "service smtpd: 3 of 3 recent connections ended in a crash -- throttling for 4s",
        Duration::from_secs(5),
    );
    let st = inst.status();
    let smtpd = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "smtpd")
        .unwrap()
        .clone();
    assert_eq!(smtpd["state"], "throttled", "{st}");
    // It comes back by itself once the throttle time is over.
    wait_for("smtpd back after throttle", Duration::from_secs(15), || {
        inst.pid_of("smtpd")
    });
    let mut c = inst.smtp();
    assert!(c.reply().starts_with("220 "));
    inst.stop();
}

#[test]
fn a_crash_with_no_connection_open_is_not_throttled() {
    let mut inst =
        Instance::new("service_throttle_time = 60s\nservice_crash_throttle_minimum = 1\n");
    inst.start();
    for _ in 0..3 {
        let pid = wait_for("smtpd", Duration::from_secs(10), || inst.pid_of("smtpd"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_for("smtpd restarted", Duration::from_secs(10), || {
            inst.pid_of("smtpd").filter(|&p| p != pid)
        });
    }
    assert!(!inst.log().contains("throttling for"), "{}", inst.log());
    inst.stop();
}

#[test]
fn reload_of_one_service_leaves_the_others_alone() {
    let mut inst = Instance::new(AUTH_IN_CLEAR);
    inst.start();
    inst.wake_on_demand_roles();
    let before: Vec<(String, u32)> = ROLES
        .iter()
        .map(|r| (r.to_string(), inst.pid_of(r).unwrap()))
        .collect();
    let master = inst.master_pid();
    let out = inst.postern(&["reload", "smtpd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old_smtpd = before.iter().find(|(r, _)| r == "smtpd").unwrap().1;
    let new_smtpd = wait_for("new smtpd", Duration::from_secs(10), || {
        inst.pid_of("smtpd").filter(|&p| p != old_smtpd)
    });
    // The old process drains and exits; nothing else changed.
    inst.wait_log(
        &format!("smtpd pid {old_smtpd} exited"),
        Duration::from_secs(10),
    );
    for (role, pid) in &before {
        if role != "smtpd" {
            assert_eq!(
                inst.pid_of(role),
                Some(*pid),
                "{role} was restarted by reload smtpd"
            );
        }
    }
    assert_eq!(inst.master_pid(), master);
    let mut c = inst.smtp();
    assert!(c.reply().starts_with("220 "));
    assert_ne!(new_smtpd, old_smtpd);
    // An unknown service is refused with a clear message.
    let out = inst.postern(&["reload", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown service: nosuch"));
    inst.stop();
}

#[test]
fn reload_with_a_broken_config_changes_nothing() {
    let mut inst = Instance::new("");
    inst.start();
    let before = inst.pid_of("smtpd").unwrap();
    let main = inst.config_dir().join("main.cf");
    let good = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{good}smtpd_timeout = forever\n")).unwrap();
    let out = inst.postern(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smtpd_timeout"), "{err}");
    assert_eq!(inst.pid_of("smtpd"), Some(before));
    std::fs::write(&main, good).unwrap();
    inst.stop();
}

#[test]
fn conf_check_reports_every_error_with_its_line() {
    let inst = Instance::new(
        "smtpd_timeout = soon\nthis is not a parameter line\nsmtpd_recipient_limit = 50\nunknown_thing = 1\n",
    );
    let out = inst.postern(&["conf", "--check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let main = inst.config_dir().join("main.cf").display().to_string();
    // Lines 1-5 of main.cf are the harness's; ours start at 6.
    for (line, what) in [
        (6, "smtpd_timeout"),
        (7, "missing '='"),
        (8, "smtpd_recipient_limit"),
    ] {
        let needle = format!("{main}:{line}: error:");
        assert!(
            err.lines().any(|l| l.contains(&needle) && l.contains(what)),
            "no {needle} {what} in:\n{err}"
        );
    }
    assert!(
        err.contains(&format!(
            "{main}:9: warning: unknown parameter: unknown_thing"
        )),
        "{err}"
    );
    assert_eq!(err.matches(": error:").count(), 3, "{err}");
    // A clean configuration passes.
    let ok = Instance::new("");
    let out = ok.postern(&["conf", "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn conf_prints_values_like_postconf() {
    let inst = Instance::new(
        "message_size_limit = 20480000\nmy_list = a, b\nsmtpd_client_restrictions = $my_list\n",
    );
    let out = inst.postern(&["conf", "message_size_limit", "smtpd_timeout"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "message_size_limit = 20480000\nsmtpd_timeout = 300s\n"
    );
    let out = inst.postern(&["conf", "-d", "message_size_limit"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "message_size_limit = 10240000\n"
    );
    let out = inst.postern(&["conf", "-x", "smtpd_client_restrictions"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "smtpd_client_restrictions = a, b\n"
    );
    let out = inst.postern(&["conf", "-n"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("message_size_limit = 20480000\n") && text.contains("my_list = a, b\n"),
        "{text}"
    );
    assert!(!text.contains("smtpd_timeout"), "{text}");
    // MAIL_CONFIG chooses the instance as -c does.
    let out = std::process::Command::new(postern_tests::bin())
        .env("MAIL_CONFIG", inst.config_dir())
        .args(["conf", "message_size_limit"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "message_size_limit = 20480000\n"
    );
}

#[test]
fn start_detached_then_stop_ends_every_process() {
    let inst = Instance::new("");
    let out = inst.postern(&["start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = inst.status();
    let pids: Vec<i32> = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap() as i32)
        // Roles that start on first use have no process yet (pid 0).
        .filter(|&pid| pid > 0)
        .collect();
    assert!(pids.len() >= 5);
    // A second start refuses.
    let again = inst.postern(&["start"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    // Logs went to $data_directory/maillog (no syslog here) or syslog.
    let out = inst.postern(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in pids {
        wait_for(&format!("pid {pid} gone"), Duration::from_secs(10), || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                .is_err()
                .then_some(())
        });
    }
    let out = inst.postern(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

/// The README's first command: `postern start` with no `-c`, in an empty
/// directory. Every daemon comes up jailed and stays up, mail to a local
/// user lands in its Maildir, and STARTTLS works with the generated
/// self-signed certificate.
#[test]
fn embedded_default_runs_every_daemon_and_takes_mail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let postern = |args: &[&str]| {
        std::process::Command::new(postern_tests::bin())
            .args(args)
            .current_dir(dir.path())
            .env_remove("MAIL_CONFIG")
            .output()
            .unwrap()
    };
    let out = postern(&["start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("postern-data");
    let stop = scopeguard(|| {
        let _ = postern(&["stop"]);
    });
    // Up, and still up a moment later (no restart loop).
    std::thread::sleep(Duration::from_secs(2));
    let st: serde_json::Value =
        serde_json::from_slice(&postern(&["status", "--json"]).stdout).expect("status --json");
    let log = || std::fs::read_to_string(data.join("maillog")).unwrap_or_default();
    for r in ROLES {
        let p = process(&st, r);
        assert_eq!(p["restarts"], 0, "{p}\n{}", log());
        if ON_DEMAND.contains(r) {
            // Started on first use; their jails are checked once woken in
            // every_daemon_runs_jailed_in_its_own_process.
            assert_eq!(p["state"], "on demand", "{p}\n{}", log());
            continue;
        }
        assert_eq!(p["state"], "running", "{p}\n{}", log());
        assert_eq!(p["seccomp"], 2, "{p}");
        assert_eq!(p["landlock"], "fully_enforced", "{p}");
    }
    let script = r#"
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", 2525, timeout=30)
s.ehlo("client.example")
assert s.has_extn("starttls"), s.esmtp_features
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo("client.example")
s.sendmail("someone@example.org", ["root@localhost"], "Subject: embedded\r\n\r\nhello\r\n")
s.quit()
print("ok")
"#;
    let out = postern_tests::python(script);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let new = data.join("mail/root/new");
    let file = wait_for(
        "the message in root's Maildir",
        Duration::from_secs(20),
        || {
            std::fs::read_dir(&new)
                .ok()?
                .flatten()
                .next()
                .map(|e| e.path())
        },
    );
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("Subject: embedded"), "{text}");
    assert!(text.contains("with ESMTPS id"), "{text}");
    assert!(text.contains("(using TLSv1.3 with cipher"), "{text}");
    drop(stop);
}

/// Runs `f` when dropped (so a failed assertion still stops the instance).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct G<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for G<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    G(Some(f))
}

/// SECURITY.md's role table must match the running system: for every row,
/// the uid, seccomp mode, landlock state and network namespace that
/// `postern status --json` reports, and no role missing on either side.
#[test]
fn security_md_role_table_matches_postern_status() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../SECURITY.md"),
    )
    .unwrap();
    let section = text
        .split("## Process roles")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Process roles section");
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| role ") && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(rows.len() > 5, "no role table found");

    // An external table wakes proxymap (qmgr asks it for each route).
    let inst = Instance::new(AUTH_IN_CLEAR);
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
    inst.add_main_cf(&format!("metrics_listen = {}:9187\n", inst.ip));
    inst.add_postscreen();
    let mut inst = inst;
    inst.start();
    inst.wake_on_demand_roles();
    wait_for(
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
    let ps = st["processes"].as_array().unwrap();
    let running: BTreeSet<&str> = ps.iter().map(|p| p["role"].as_str().unwrap()).collect();
    let documented: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        running, documented,
        "SECURITY.md's roles differ from the running ones"
    );
    for row in &rows {
        let (role, uid, landlock, groups, network) = (&row[0], &row[1], &row[2], &row[3], &row[4]);
        let p = ps.iter().find(|p| p["role"] == role.as_str()).unwrap();
        let jailed = landlock != "not jailed";
        assert_eq!(
            p["seccomp"],
            if jailed { 2 } else { 0 },
            "{role}: seccomp vs \"{groups}\""
        );
        assert_eq!(
            p["landlock"],
            if jailed {
                "fully_enforced"
            } else {
                "not_enforced"
            },
            "{role}: landlock vs \"{landlock}\""
        );
        let netns = if network.starts_with("private netns") {
            "private"
        } else {
            assert!(
                network.starts_with("host network") || !jailed,
                "{role}: network column \"{network}\" says neither"
            );
            "shared"
        };
        assert_eq!(p["netns"], netns, "{role}: netns vs \"{network}\"");
        if is_root() {
            let want = match uid.strip_prefix("role_id_base+") {
                Some(n) => 60200 + n.parse::<u64>().unwrap(),
                None => {
                    assert!(uid.starts_with("0 "), "{role}: uid column \"{uid}\"");
                    0
                }
            };
            assert_eq!(p["uid"], want, "{role}: uid vs \"{uid}\"");
        }
    }
    inst.stop();
}
