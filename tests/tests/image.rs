//! The appliance image (image/), booted in qemu: read-only root, every
//! role jailed as on the host, mail in from the host and out through a
//! relayhost with TLS and SASL, cron mail through the box's sendmail; the
//! pulled plug (SIGKILL to qemu) losing no accepted message; an upgrade to
//! another image on the same data partition and back.
//!
//! Host-side endpoints are only on 127.0.0.1: qemu's hostfwd for the
//! guest's port 25, and the slirp host address 10.0.2.2 (which qemu turns
//! into 127.0.0.1) for the guest's relayhost, a real aiosmtpd server.
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_tests::vm::{self, Guest};
use postern_tests::{Sink, numbered_message, try_send, verify_numbered, wait_for};
use serde_json::Value;

/// Where the boot and plug tests leave their one-line reports, printed by
/// .ci/run.
fn report(line: &str) {
    eprintln!("== {line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    let _ = std::fs::create_dir_all(&dir);
    let mut text = std::fs::read_to_string(dir.join("image-report.txt")).unwrap_or_default();
    text.push_str(line);
    text.push('\n');
    let _ = std::fs::write(dir.join("image-report.txt"), text);
}

/// Boots take longer without KVM.
fn boot_timeout() -> Duration {
    if vm::accel() == "kvm" {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(180)
    }
}

const SASL_USER: &str = "appliance@example.net";
const SASL_PASS: &str = "relay-secret-7";
const ADMIN: &str = "admin@example.net";

/// The relayhost: a real SMTP server with STARTTLS and AUTH required, on
/// 127.0.0.1 (the guest reaches it as 10.0.2.2).
struct Relay {
    sink: Sink,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start() -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let pki = postern_tests::pki::make(dir.path(), "relay", "relay.example.net");
        let port = vm::free_port();
        let auth = format!("{SASL_USER}:{SASL_PASS}");
        let sink = Sink::start_with(
            "127.0.0.1",
            port,
            &dir.path().join("sink"),
            &[
                "--tls",
                pki.server_cert.to_str().unwrap(),
                pki.server_key.to_str().unwrap(),
                "--auth",
                &auth,
            ],
        );
        Relay { sink, _dir: dir }
    }

    /// Messages whose content contains `needle`.
    fn with(&self, needle: &str) -> Vec<(Value, Vec<u8>)> {
        self.sink
            .messages()
            .into_iter()
            .filter(|(_, m)| String::from_utf8_lossy(m).contains(needle))
            .collect()
    }
}

/// The data partition's files: main.cf (the image's defaults, as an admin
/// copies them, plus the relayhost), the aliases, the SASL password, a
/// crontab that reports every minute, and the service console switch.
fn seed(dir: &Path, relay_port: u16) -> PathBuf {
    let seed = dir.join("seed");
    let etc = seed.join("etc/postern");
    std::fs::create_dir_all(&etc).unwrap();
    let defaults = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/rootfs/etc/postern/main.cf"),
    )
    .unwrap();
    std::fs::write(
        etc.join("main.cf"),
        format!(
            "{defaults}\n# This box.\nmyhostname = box.example.net\nrelayhost = [10.0.2.2]:{relay_port}\nsmtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:/etc/postern/sasl_passwd\n"
        ),
    )
    .unwrap();
    std::fs::write(
        etc.join("aliases"),
        format!("postmaster: root\nMAILER-DAEMON: postmaster\nroot: {ADMIN}\n"),
    )
    .unwrap();
    let pw = etc.join("sasl_passwd");
    std::fs::write(
        &pw,
        format!("[10.0.2.2]:{relay_port} {SASL_USER}:{SASL_PASS}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(seed.join("etc/crontabs")).unwrap();
    std::fs::write(
        seed.join("etc/crontabs/root"),
        "* * * * * /usr/libexec/postern/report \"scheduled report\" | /usr/sbin/sendmail -t\n",
    )
    .unwrap();
    std::fs::write(seed.join("etc/service-console"), "").unwrap();
    seed
}

/// Every process `postern status --json` lists in the guest, jailed as on
/// the host: no_new_privs, seccomp filter mode, no capabilities, landlock
/// fully enforced and a role uid (not root), the master aside.
/// (Roles started on demand are checked once they run: the mail test
/// afterwards wakes them, and the status taken at the end checks again.)
fn assert_all_jailed(status: &Value) {
    let ps = status["processes"].as_array().expect("a process list");
    let mut jailed = 0;
    for p in ps {
        // Off, or on demand and not started yet: no process to check.
        if p["pid"].as_u64().unwrap_or(0) == 0 || p["role"] == "master" {
            continue;
        }
        assert_eq!(p["no_new_privs"], true, "{p}");
        assert_eq!(p["seccomp"], 2, "{p}");
        assert_eq!(p["cap_eff"], "0000000000000000", "{p}");
        assert_eq!(p["landlock"], "fully_enforced", "{p}");
        let uid = p["uid"].as_u64().unwrap();
        assert!((60200..60300).contains(&uid), "{p}");
        jailed += 1;
    }
    assert!(jailed >= 6, "too few roles running: {status}");
}

#[test]
fn boots_read_only_jailed_and_relays_mail_and_cron_reports() {
    let image = vm::image("1.0.0-test");
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start();
    let seed = seed(dir.path(), relay.sink.port);
    let data = dir.path().join("data.img");
    vm::data_disk(&data, 256, Some(&seed));

    let mut g = Guest::boot(&image, &data, dir.path(), "boot");
    let to_220 = g.wait_greeting(boot_timeout());

    // The root file system is read-only.
    let mounts = g.sh_ok("cat /proc/mounts");
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_else(|| panic!("no / in {mounts}"));
    let opts = root.split_whitespace().nth(3).unwrap();
    assert!(opts.split(',').any(|o| o == "ro"), "{root}");
    let (out, rc) = g.sh("echo x > /written", Duration::from_secs(10));
    assert_ne!(rc, 0, "a write to / succeeded: {out}");
    assert!(out.contains("Read-only file system"), "{out}");

    // Every role jailed, as on the host.
    let st = g.sh_ok("postern status --json");
    let json = &st[st.find('{').expect("JSON from status")..];
    let status: Value = serde_json::from_str(json.trim()).expect("status --json parses");
    assert_all_jailed(&status);

    // Mail from the host to the box's root goes out through the relayhost,
    // over TLS, authenticated, to the address root is aliased to.
    let body = numbered_message("image-in", 1);
    let r = try_send(
        "127.0.0.1",
        g.smtp_port,
        "sender@outside.example",
        &["root@box.example.net"],
        &body,
    )
    .expect("SMTP from the host");
    assert!(r.starts_with("250"), "{r}");
    let got = wait_for(
        "the host's message at the relayhost",
        Duration::from_secs(90),
        || relay.with("image-in-1").into_iter().next(),
    );
    assert_eq!(verify_numbered(&got.1, "image-in"), Ok(1));
    assert_eq!(got.0["to"], serde_json::json!([ADMIN]), "{}", got.0);
    assert_eq!(got.0["auth"], true, "{}", got.0);
    assert!(
        got.0["tls"].as_str().is_some_and(|v| v.starts_with("TLS")),
        "{}",
        got.0
    );

    // The boot notice and the scheduled report, both sent by the box's own
    // programs through sendmail.
    let boot_id = g
        .sh_ok("cat /proc/sys/kernel/random/boot_id")
        .trim()
        .to_string();
    wait_for("the boot notice", Duration::from_secs(90), || {
        relay
            .with("booted at")
            .into_iter()
            .find(|(_, m)| String::from_utf8_lossy(m).contains(&boot_id))
    });
    let cron = wait_for("the cron report", Duration::from_secs(150), || {
        relay
            .with("scheduled report at")
            .into_iter()
            .find(|(_, m)| String::from_utf8_lossy(m).contains(&boot_id))
    });
    assert_eq!(cron.0["to"], serde_json::json!([ADMIN]), "{}", cron.0);

    // Now that mail has flowed, the roles started on demand run too.
    let st = g.sh_ok("postern status --json");
    let status: Value = serde_json::from_str(st[st.find('{').unwrap()..].trim()).unwrap();
    assert_all_jailed(&status);

    // The whole mail system's memory, idle, as the guest's kernel counts it.
    g.sh_ok("sleep 2");
    let pss = g.sh_ok(
        "t=0; for p in $(pidof postern); do k=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup); t=$((t + k)); done; echo $t; pidof postern | wc -w",
    );
    let mut nums = pss.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    let (kb, procs) = (nums.next().unwrap(), nums.next().unwrap());
    assert!(procs >= 7, "{procs} postern processes");
    report(&format!(
        "image: accel={} boot-to-220={:.1}s idle-pss={:.1}MB in {procs} processes (Postfix: 7.1 MB)",
        vm::accel(),
        to_220.as_secs_f64(),
        kb as f64 / 1024.0
    ));
    g.poweroff();
}
