//! MTA-STS (RFC 8461): the sts role fetches policies from a real HTTPS
//! server on 127.0.0.x:443 (Python's http.server over ssl,
//! tests/tools/https_policy.py) whose certificate a test CA issued
//! (smtp_mta_sts_ca_file); DNS comes from a real server on loopback; MX
//! hosts are aiosmtpd sinks on port 25 with certificates of the same CA
//! (smtp_tls_CAfile).
//!
//! - enforce with a matching MX delivers over verified TLS;
//! - enforce with an MX host the policy does not name defers, logged;
//! - testing mode delivers and logs the mismatch;
//! - a policy is fetched once and kept (also across a restart), and
//!   fetched again when the TXT record's id changes;
//! - three domains on one MX host: one whose policy cannot be fetched
//!   (no policy: delivered), one whose enforced policy names the host
//!   (delivered, verified) and one whose enforced policy does not
//!   (deferred): each domain's policy is its own;
//! - a policy past half its max_age is fetched again in the background
//!   while mail goes there (the cached one answers meanwhile), so a
//!   change on the policy host shows without a new TXT id.
use std::path::Path;
use std::time::Duration;

use postern_tests::{Instance, Sink, pki, python_ok, unique_loopback, wait_for};

const DOMAINS: &[&str] = &[
    "enf", "nomatch", "testing", "change", "good", "broken", "refused", "warm",
];

/// warm.test's policy lives this long (seconds).
const WARM_MAX_AGE: u64 = 30;

fn policy(dir: &Path, domain: &str, mode: &str, mx: &[&str]) {
    let mut body = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        body.push_str(&format!("mx: {m}\r\n"));
    }
    let max_age = if domain == "warm" {
        WARM_MAX_AGE
    } else {
        86400
    };
    body.push_str(&format!("max_age: {max_age}\r\n"));
    std::fs::write(dir.join(format!("mta-sts.{domain}.test.txt")), body).unwrap();
}

fn zone(ips: &[(&str, &str)], https: &str, change_id: u32) -> String {
    let ip = |n: &str| ips.iter().find(|(k, _)| *k == n).unwrap().1.to_string();
    let mut z = String::from(
        "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 1\n\
         @ 3600 IN NS ns.test.\n\
         ns 3600 IN A 127.0.0.1\n",
    );
    for d in DOMAINS {
        let id = if *d == "change" { change_id } else { 1 };
        z.push_str(&format!(
            "_mta-sts.{d} 1 IN TXT \"v=STSv1; id={id}\"\n\
             mta-sts.{d} 60 IN A {https}\n"
        ));
    }
    for d in ["enf", "nomatch", "testing", "change"] {
        z.push_str(&format!(
            "{d} 60 IN MX 10 mx1.{d}\nmx1.{d} 60 IN A {}\n",
            ip(d)
        ));
    }
    for d in ["good", "broken", "refused"] {
        z.push_str(&format!("{d} 60 IN MX 10 mx.shared\n"));
    }
    z.push_str(&format!("mx.shared 60 IN A {}\n", ip("shared")));
    z.push_str("warm 60 IN MX 10 mx1.enf\n");
    z
}

fn send(inst: &Instance, rcpt: &str) {
    python_ok(&format!(
        "import smtplib\ns = smtplib.SMTP({ip:?}, {port})\nr = s.sendmail('a@example.org', [{rcpt:?}], 'Subject: to {rcpt}\\r\\n\\r\\nhi\\r\\n')\nassert r == {{}}, r\ns.quit()\n",
        ip = inst.ip,
        port = inst.smtp_port
    ));
}

/// The line of the latest delivery attempt for `rcpt`, once there is one.
fn attempt(inst: &Instance, rcpt: &str, n: usize) -> String {
    wait_for(
        &format!("delivery attempt {n} for {rcpt}"),
        Duration::from_secs(30),
        || {
            let lines: Vec<String> = inst
                .log()
                .lines()
                .filter(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status="))
                .map(str::to_string)
                .collect();
            (lines.len() >= n).then(|| lines[n - 1].clone())
        },
    )
}

fn fetches(dir: &Path, host: &str) -> usize {
    std::fs::read_to_string(dir.join("requests.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == host)
        .count()
}

#[test]
fn mta_sts_policies_per_domain() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0");
    let cfg = inst.config_dir().to_path_buf();
    let policy_hosts: Vec<String> = DOMAINS
        .iter()
        .map(|d| format!("mta-sts.{d}.test"))
        .collect();
    let policy_names: Vec<&str> = policy_hosts.iter().map(String::as_str).collect();
    let issued = pki::issue(
        &cfg,
        "sts",
        &[
            &policy_names,
            &["mx1.enf.test"],
            &["mx1.nomatch.test"],
            &["mx1.testing.test"],
            &["mx1.change.test"],
            &["mx.shared.test"],
        ],
    );
    let sink = |i: usize, tag: &str| {
        let (chain, key) = &issued.certs[i];
        Sink::mx(inst.dir.path(), tag, chain, key, &[])
    };
    let (enf_ip, enf) = sink(1, "enf");
    let (nomatch_ip, nomatch) = sink(2, "nomatch");
    let (testing_ip, testing) = sink(3, "testing");
    let (change_ip, change) = sink(4, "change");
    let (shared_ip, shared) = sink(5, "shared");

    // The policy host.
    let web = inst.dir.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    policy(&web, "enf", "enforce", &["mx1.enf.test"]);
    policy(&web, "nomatch", "enforce", &["mx.elsewhere.test"]);
    policy(&web, "testing", "testing", &["mx.elsewhere.test"]);
    policy(&web, "change", "testing", &["mx.elsewhere.test"]);
    policy(&web, "good", "enforce", &["mx.shared.test", "*.enf.test"]);
    policy(&web, "refused", "enforce", &["mx1.enf.test"]);
    policy(&web, "warm", "testing", &["mx.elsewhere.test"]);
    // broken.test publishes a TXT record, but its policy host has no
    // policy (404).
    let https_ip = unique_loopback();
    let (chain, key) = &issued.certs[0];
    let mut server = postern_tests::https_policy_server(&https_ip, chain, key, &web);

    let ips = [
        ("enf", enf_ip.as_str()),
        ("nomatch", nomatch_ip.as_str()),
        ("testing", testing_ip.as_str()),
        ("change", change_ip.as_str()),
        ("shared", shared_ip.as_str()),
    ];
    let dns_ip = unique_loopback();
    let dns = postern_tests::dns::start_zones(&dns_ip, &[("test.", &zone(&ips, &https_ip, 1))]);
    inst.add_main_cf(&format!(
        "dns_nameservers = {}\nsmtp_tls_CAfile = {ca}\nsmtp_mta_sts_ca_file = {ca}\n\
         minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n\
         smtp_connection_cache_size = 0\n",
        dns.addr,
        ca = issued.ca.display()
    ));
    inst.start();

    for d in DOMAINS {
        send(&inst, &format!("u@{d}.test"));
    }
    let count = |s: &Sink, n: usize, what: &str| {
        wait_for(what, Duration::from_secs(30), || {
            (s.messages().len() >= n).then_some(())
        });
    };
    // enforce, matching MX: verified TLS.
    count(&enf, 1, "enf.test's message");
    inst.wait_log(
        &format!("Verified TLS connection established to mx1.enf.test[{enf_ip}]:25"),
        Duration::from_secs(10),
    );
    // enforce, MX host not in the policy: deferred, logged.
    let line = attempt(&inst, "u@nomatch.test", 1);
    assert!(
        line.contains("status=deferred")
            && line.contains(
                "MX host mx1.nomatch.test does not match the MTA-STS policy of nomatch.test"
            ),
        "{line}"
    );
    inst.wait_log(
        "MX host mx1.nomatch.test does not match the MTA-STS policy of nomatch.test (id 1, enforce): not used",
        Duration::from_secs(5),
    );
    // testing: delivered, logged.
    count(&testing, 1, "testing.test's message");
    inst.wait_log(
        "MX host mx1.testing.test does not match the MTA-STS policy of testing.test (id 1, testing): used all the same",
        Duration::from_secs(5),
    );
    count(&change, 1, "change.test's first message (testing)");
    // One MX host, three domains, three outcomes.
    count(&shared, 2, "good.test's and broken.test's messages");
    let line = attempt(&inst, "u@refused.test", 1);
    assert!(
        line.contains("status=deferred")
            && line.contains(
                "MX host mx.shared.test does not match the MTA-STS policy of refused.test"
            ),
        "{line}"
    );
    inst.wait_log(
        &format!("Verified TLS connection established to mx.shared.test[{shared_ip}]:25"),
        Duration::from_secs(5),
    );
    inst.wait_log(
        "broken.test: MTA-STS policy fetch failed",
        Duration::from_secs(5),
    );
    let line = attempt(&inst, "u@broken.test", 1);
    assert!(line.contains("status=sent"), "{line}");
    let line = attempt(&inst, "u@warm.test", 1);
    assert!(line.contains("status=sent"), "{line}");
    // warm.test's policy was fetched before this moment.
    let fetched = std::time::Instant::now();
    assert!(nomatch.messages().is_empty());

    // Kept: a second message to enf.test fetches nothing; nor does one
    // after a restart (the state store has it).
    send(&inst, "v@enf.test");
    count(&enf, 2, "enf.test's second message");
    assert_eq!(fetches(&web, "mta-sts.enf.test"), 1);
    inst.stop();
    inst.start();
    send(&inst, "w@enf.test");
    count(&enf, 3, "enf.test's message after the restart");
    assert_eq!(
        fetches(&web, "mta-sts.enf.test"),
        1,
        "fetched again after a restart"
    );

    // A new id: fetched again, and the new (enforced) policy applies.
    policy(&web, "change", "enforce", &["mx.elsewhere.test"]);
    dns.replace("test.", &zone(&ips, &https_ip, 2));
    std::thread::sleep(Duration::from_millis(1500));
    send(&inst, "v@change.test");
    let line = attempt(&inst, "v@change.test", 1);
    assert!(
        line.contains("status=deferred")
            && line.contains("does not match the MTA-STS policy of change.test"),
        "{line}"
    );
    inst.wait_log(
        "change.test: MTA-STS policy id 2: mode enforce",
        Duration::from_secs(5),
    );
    assert_eq!(fetches(&web, "mta-sts.change.test"), 2);
    assert_eq!(change.messages().len(), 1);

    // Kept warm: past half its max_age (same TXT id), a message still
    // goes by the cached policy (testing: delivered) and the policy is
    // fetched again meanwhile; the next message (on a new connection: no
    // session is cached here) meets the new one.
    policy(&web, "warm", "enforce", &["mx.elsewhere.test"]);
    let half = Duration::from_secs(WARM_MAX_AGE / 2 + 1);
    std::thread::sleep(half.saturating_sub(fetched.elapsed()));
    send(&inst, "v@warm.test");
    let line = attempt(&inst, "v@warm.test", 1);
    assert!(line.contains("status=sent"), "the cached policy: {line}");
    inst.wait_log(
        "warm.test: MTA-STS policy id 1 refreshed before it expires: mode enforce",
        Duration::from_secs(10),
    );
    send(&inst, "w@warm.test");
    let line = attempt(&inst, "w@warm.test", 1);
    assert!(
        line.contains("status=deferred")
            && line.contains("does not match the MTA-STS policy of warm.test"),
        "{line}"
    );
    assert_eq!(fetches(&web, "mta-sts.warm.test"), 2);
    let _ = server.kill();
    let _ = server.wait();
}
