//! REQUIRETLS (RFC 8689) end to end: Python's smtplib asks for it after
//! STARTTLS, Postern relays to aiosmtpd sinks on port 25 (MX records from
//! a real DNS server on loopback; certificates from a test CA), with the
//! default smtp_requiretls_policy (enforce for remote domains).
//!
//! - REQUIRETLS is announced only inside TLS, and the MAIL parameter is
//!   refused outside it;
//! - to a next hop whose certificate is verified and that offers
//!   REQUIRETLS, the message goes out with REQUIRETLS and carries
//!   `Require-TLS-ESMTP: yes`;
//! - to a next hop at level `may` it bounces with 5.7.10, to a verified
//!   one that does not offer REQUIRETLS with 5.7.30; nothing reaches
//!   either, and the notices carry the headers only
//!   (requiretls_redact_dsn);
//! - `TLS-Required: No` delivers where the policy would have refused the
//!   certificate.
use std::time::Duration;

use postern_tests::{Instance, Sink, pki, python_ok, unique_loopback, wait_for};

#[test]
fn requiretls_is_enforced_and_tls_required_no_is_honoured() {
    let mut inst = Instance::new("smtpd_error_sleep_time = 0");
    let cfg = inst.config_dir().to_path_buf();
    let issued = pki::issue(
        &cfg,
        "rt",
        &[
            &["mx.verified.test"],
            &["mx.plain.test"],
            &["mx.noreq.test"],
        ],
    );
    // A certificate the test CA did not issue.
    let other = pki::make(&cfg, "other", "mx.tlsopt.test");
    let sink = |i: Option<usize>, tag: &str, extra: &[&str]| {
        let ip = unique_loopback();
        let (chain, key) = match i {
            Some(i) => (
                issued.certs[i].0.display().to_string(),
                issued.certs[i].1.display().to_string(),
            ),
            None => (
                other.server_cert.display().to_string(),
                other.server_key.display().to_string(),
            ),
        };
        let mut opts = vec!["--tls", &chain, &key];
        opts.extend_from_slice(extra);
        let s = Sink::start_with(&ip, 25, &inst.dir.path().join(format!("sink-{tag}")), &opts);
        (ip, s)
    };
    let (verified_ip, verified) = sink(Some(0), "verified", &["--requiretls"]);
    let (plain_ip, plain) = sink(Some(1), "plain", &["--requiretls"]);
    let (noreq_ip, noreq) = sink(Some(2), "noreq", &[]);
    let (tlsopt_ip, tlsopt) = sink(None, "tlsopt", &["--requiretls"]);
    let mut zone = String::from(
        "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.test.\nns 3600 IN A 127.0.0.1\n",
    );
    for (d, ip) in [
        ("verified", &verified_ip),
        ("plain", &plain_ip),
        ("noreq", &noreq_ip),
        ("tlsopt", &tlsopt_ip),
    ] {
        zone.push_str(&format!("{d} 60 IN MX 10 mx.{d}\nmx.{d} 60 IN A {ip}\n"));
    }
    let dns_ip = unique_loopback();
    let dns = postern_tests::dns::start_zones(&dns_ip, &[("test.", &zone)]);
    let policies = cfg.join("tls_policy");
    std::fs::write(
        &policies,
        "verified.test verify\nnoreq.test verify\ntlsopt.test verify\n",
    )
    .unwrap();
    inst.add_main_cf(&format!(
        "dns_nameservers = {}\nsmtp_tls_CAfile = {}\nsmtp_tls_policy_maps = texthash:{}\n\
         smtp_mta_sts_enable = no\nsmtp_log_tls_feature_status = yes\n",
        dns.addr,
        issued.ca.display(),
        policies.display()
    ));
    inst.start();

    python_ok(&format!(
        r#"
import smtplib, ssl
s = smtplib.SMTP({ip:?}, {port})
s.ehlo()
assert not s.has_extn("requiretls"), s.esmtp_features
code, _ = s.docmd("MAIL FROM:<root@localhost> REQUIRETLS")
assert code == 555, code
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo()
assert s.has_extn("requiretls"), s.esmtp_features
for rcpt in ["u@verified.test", "u@plain.test", "u@noreq.test"]:
    msg = "Subject: to %s\r\nMessage-ID: <rt-%s>\r\n\r\nthe secret body\r\n" % (rcpt, rcpt)
    r = s.sendmail("root@localhost", [rcpt], msg, mail_options=["REQUIRETLS"])
    assert r == {{}}, r
# TLS-Required: No, without REQUIRETLS: no TLS policy for this message.
s.sendmail("root@localhost", ["u@tlsopt.test"], "Subject: relaxed\r\nTLS-Required: No\r\n\r\nhi\r\n")
s.quit()
"#,
        ip = inst.ip,
        port = inst.smtp_port
    ));

    // Verified, offered, sent with REQUIRETLS.
    wait_for(
        "the verified host's message",
        Duration::from_secs(30),
        || (verified.messages().len() == 1).then_some(()),
    );
    let (env, content) = &verified.messages()[0];
    assert_eq!(env["requiretls"], true, "{env}");
    let text = String::from_utf8_lossy(content);
    assert!(text.contains("Require-TLS-ESMTP: yes\r\n"), "{text}");
    inst.wait_log(
        &format!("Verified TLS connection established to mx.verified.test[{verified_ip}]:25"),
        Duration::from_secs(5),
    );
    // The tls= field says REQUIRETLS was sent over a matched certificate.
    let sent = inst
        .log()
        .lines()
        .find(|l| l.contains("to=<u@verified.test>") && l.contains("status=sent"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(sent.contains("tls=verify/requiretls, dsn=2.0.0"), "{sent}");
    // The refusals: bounced with the RFC's codes, nothing sent.
    for (rcpt, dsn, why) in [
        (
            "u@plain.test",
            "5.7.10",
            "Sender requested REQUIRETLS, but my configured TLS security level 'may' disables certificate matching",
        ),
        (
            "u@noreq.test",
            "5.7.30",
            "Sender requested REQUIRETLS, but no server was found that supports REQUIRETLS",
        ),
    ] {
        let line = wait_for(&format!("{rcpt} bounced"), Duration::from_secs(30), || {
            inst.log()
                .lines()
                .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status="))
                .map(str::to_string)
        });
        assert!(
            line.contains(&format!("dsn={dsn}, status=bounced")) && line.contains(why),
            "{line}"
        );
    }
    assert!(plain.messages().is_empty());
    assert!(noreq.messages().is_empty());
    // The notices carry the headers, not the body.
    wait_for(
        "two notices in root's Maildir",
        Duration::from_secs(30),
        || (inst.maildir("root").len() == 2).then_some(()),
    );
    for dsn in inst.maildir("root") {
        assert!(dsn.contains("Undelivered Mail Returned to Sender"), "{dsn}");
        assert!(dsn.contains("text/rfc822-headers"), "{dsn}");
        assert!(!dsn.contains("the secret body"), "{dsn}");
    }
    // TLS-Required: No went out although the certificate does not verify.
    wait_for(
        "the TLS-Required: No message",
        Duration::from_secs(30),
        || (tlsopt.messages().len() == 1).then_some(()),
    );
    inst.wait_log(
        &format!("Untrusted TLS connection established to mx.tlsopt.test[{tlsopt_ip}]:25"),
        Duration::from_secs(5),
    );
    inst.wait_log("to=<u@tlsopt.test>", Duration::from_secs(5));
    assert!(
        inst.log()
            .lines()
            .any(|l| l.contains("to=<u@tlsopt.test>") && l.contains("tls=may, dsn=2.0.0"))
    );
}
