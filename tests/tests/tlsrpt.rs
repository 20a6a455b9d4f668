//! TLS-RPT (RFC 8460) reports as proto/src/tlsrpt.rs writes them, checked
//! by Debian's python3-jsonschema against a schema written from the RFC's
//! field definitions (tests/tools/tlsrpt-schema.json), with the JSON taken
//! back out of the gzipped attachment of the report mail. A report that
//! lacks a field must fail the same check.
//!
//! The smtp client does not count sessions or send reports yet (issue 18):
//! this checks the report format those pieces will use.
use std::path::Path;
use std::process::Command;

use postern_proto::tlsrpt::{Counts, Failure, PolicyId, Report};

/// The JSON of the report mail in `eml`: its multipart/report's
/// application/tlsrpt+gzip part, unpacked by Python's email and gzip.
fn report_json(eml: &Path) -> String {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import email, gzip, sys\n\
             m = email.message_from_binary_file(open(sys.argv[1], 'rb'))\n\
             assert m.get_content_type() == 'multipart/report', m.get_content_type()\n\
             assert m.get_param('report-type') == 'tlsrpt'\n\
             part = [p for p in m.walk() if p.get_content_type() == 'application/tlsrpt+gzip'][0]\n\
             sys.stdout.write(gzip.decompress(part.get_payload(decode=True)).decode())\n",
        )
        .arg(eml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn validate(json: &str, dir: &Path) -> Result<(), String> {
    let file = dir.join("report.json");
    std::fs::write(&file, json).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/tlsrpt-schema.json");
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import json, sys, jsonschema\n\
             jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])),\n\
             format_checker=jsonschema.FormatChecker())\n",
        )
        .arg(&file)
        .arg(&schema)
        .output()
        .expect("python3 (apt-get install python3-jsonschema)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn report_json_passes_the_rfc_schema() {
    let dir = tempfile::tempdir().unwrap();
    let sts = PolicyId {
        kind: "sts".into(),
        strings: vec![
            "version: STSv1".into(),
            "mode: enforce".into(),
            "mx: *.mail.example.com".into(),
            "max_age: 86400".into(),
        ],
        domain: "example.com".into(),
        mx: vec!["*.mail.example.com".into()],
    };
    let tlsa = PolicyId {
        kind: "tlsa".into(),
        strings: vec!["3 1 1 2a0d3c...".into()],
        domain: "example.net".into(),
        mx: vec!["mx.example.net".into()],
    };
    let mut a = Counts::default();
    let mut b = Counts::default();
    for _ in 0..5 {
        a.record(Ok(()));
    }
    let f = |t: &str| Failure {
        result_type: t.into(),
        sending_ip: "192.0.2.25".into(),
        mx_host: "mx.example.net".into(),
        receiving_ip: "198.51.100.7".into(),
        count: 0,
    };
    b.record(Err(&f("validation-failure")));
    b.record(Err(&f("dnssec-invalid")));
    b.record(Ok(()));
    let r = Report {
        organization: "Postern test".into(),
        contact: "postmaster@sender.example".into(),
        report_id: "2026-12-06.1@sender.example".into(),
        day: "2026-12-06".into(),
        policies: vec![(sts, a), (tlsa, b)],
    };
    // The JSON as it travels: base64 in the mail, gzipped.
    let name = r.file_name(
        "mx.sender.example",
        "example.com",
        1_796_515_200,
        1_796_601_599,
    );
    let mail = r.mail(
        "postmaster@sender.example",
        "tlsrpt@example.com",
        "mx.sender.example",
        "example.com",
        "Mon, 7 Dec 2026 00:05:00 +0000",
        "<r1@sender.example>",
        &name,
    );
    std::fs::write(dir.path().join("report.eml"), &mail).unwrap();
    let json = report_json(&dir.path().join("report.eml"));
    assert_eq!(json, r.json());
    validate(&json, dir.path()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["policies"][1]["summary"]["total-failure-session-count"],
        2
    );
    assert_eq!(
        v["policies"][1]["summary"]["total-successful-session-count"],
        1
    );

    // The check can fail: no summary, and an unknown result type.
    let mut broken = v.clone();
    broken["policies"][0]
        .as_object_mut()
        .unwrap()
        .remove("summary");
    assert!(validate(&broken.to_string(), dir.path()).is_err());
    let mut broken = v;
    broken["policies"][1]["failure-details"][0]["result-type"] = "oops".into();
    assert!(validate(&broken.to_string(), dir.path()).is_err());
}

/// The whole path: smtp counts its sessions to two domains with MTA-STS
/// policies (two verified deliveries to one, an MX host the other's
/// enforced policy does not name), the sts role keeps the counts in the
/// state store, and once the day is over (the clock moved a day ahead by
/// smtp_tls_rpt_clock_offset and a reload, which also restarts the role)
/// it mails each domain's report to the `rua` of its `_smtp._tls` record.
/// The reports reach a sink through Postern itself; their JSON passes the
/// schema and counts exactly those sessions.
#[test]
fn daily_reports_count_the_sessions_and_are_mailed() {
    use postern_tests::{Instance, Sink, pki, python_ok, unique_loopback, wait_for};
    use std::time::Duration;
    let mut inst = Instance::new("smtpd_error_sleep_time = 0");
    let cfg = inst.config_dir().to_path_buf();
    let issued = pki::issue(
        &cfg,
        "rpt",
        &[
            &[
                "mta-sts.good.test",
                "mta-sts.bad.test",
                "mta-sts.cert.test",
                "reports-web.test",
            ],
            &["mx1.good.test"],
            &["mx1.bad.test"],
        ],
    );
    let sink = |i: usize, tag: &str| {
        let (chain, key) = &issued.certs[i];
        Sink::mx(inst.dir.path(), tag, chain, key, &[])
    };
    let (good_ip, good) = sink(1, "good");
    let (bad_ip, bad) = sink(2, "bad");
    // cert.test's MX host presents mx1.bad.test's certificate: a session
    // that fails on the certificate's name.
    let (cert_ip, cert) = sink(2, "cert");
    let reports_ip = unique_loopback();
    let reports = Sink::start(&reports_ip, 25, &inst.dir.path().join("sink-reports"));
    let web = inst.dir.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(
        web.join("mta-sts.good.test.txt"),
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.good.test\r\nmax_age: 86400\r\n",
    )
    .unwrap();
    std::fs::write(
        web.join("mta-sts.cert.test.txt"),
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.cert.test\r\nmax_age: 86400\r\n",
    )
    .unwrap();
    std::fs::write(
        web.join("mta-sts.bad.test.txt"),
        "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n",
    )
    .unwrap();
    let https_ip = unique_loopback();
    let (chain, key) = &issued.certs[0];
    let mut server = postern_tests::https_policy_server(&https_ip, chain, key, &web);
    let mut zone = String::from(
        "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.test.\nns 3600 IN A 127.0.0.1\n",
    );
    for (d, ip) in [("good", &good_ip), ("bad", &bad_ip), ("cert", &cert_ip)] {
        zone.push_str(&format!(
            "{d} 60 IN MX 10 mx1.{d}\nmx1.{d} 60 IN A {ip}\n\
             _mta-sts.{d} 60 IN TXT \"v=STSv1; id=1\"\nmta-sts.{d} 60 IN A {https_ip}\n\
             _smtp._tls.{d} 60 IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://reports-web.test/v1/tlsrpt\"\n"
        ));
    }
    zone.push_str(&format!(
        "reports 60 IN MX 10 mx.reports\nmx.reports 60 IN A {reports_ip}\nreports-web 60 IN A {https_ip}\n"
    ));
    let dns_ip = unique_loopback();
    let dns = postern_tests::dns::start_zones(&dns_ip, &[("test.", &zone)]);
    inst.add_main_cf(&format!(
        "dns_nameservers = {}\nsmtp_tls_CAfile = {ca}\nsmtp_mta_sts_ca_file = {ca}\n\
         smtp_tls_rpt_enable = yes\nsmtp_tls_rpt_organization = Postern test\n\
         smtp_connection_cache_size = 0\n",
        dns.addr,
        ca = issued.ca.display()
    ));
    inst.start();
    // With TLS-RPT on, the sts role runs from the start (its reports must
    // leave after midnight even on a day without a delivery), not on
    // first use.
    inst.wait_log(" sts pid ", Duration::from_secs(10));
    assert!(
        !inst.log().contains("starting sts on first use"),
        "{}",
        inst.log()
    );
    let send = |rcpt: &str| {
        python_ok(&format!(
            "import smtplib\ns = smtplib.SMTP({ip:?}, {port})\nr = s.sendmail('a@example.org', [{rcpt:?}], 'Subject: to {rcpt}\\r\\n\\r\\nhi\\r\\n')\nassert r == {{}}, r\ns.quit()\n",
            ip = inst.ip,
            port = inst.smtp_port
        ));
    };
    for n in 1..=2 {
        send("u@good.test");
        wait_for("good.test's message", Duration::from_secs(30), || {
            (good.messages().len() == n).then_some(())
        });
    }
    send("u@bad.test");
    inst.wait_log(
        "MX host mx1.bad.test does not match the MTA-STS policy of bad.test",
        Duration::from_secs(30),
    );
    send("u@cert.test");
    inst.wait_log("to=<u@cert.test>, relay=none", Duration::from_secs(30));
    // The day ends: the counts survive the role's restart in the state
    // store, and the reports go out.
    inst.add_main_cf("smtp_tls_rpt_clock_offset = 1d\n");
    let out = inst.postern(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    // The role starts again on its next use.
    send("v@good.test");
    wait_for("three reports", Duration::from_secs(60), || {
        (reports.messages().len() == 3).then_some(())
    });
    inst.wait_log("TLS-RPT: report for good.test", Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for (env, content) in reports.messages() {
        assert_eq!(env["to"][0], "tlsrpt@reports.test", "{env}");
        let eml = dir.path().join("r.eml");
        std::fs::write(&eml, &content).unwrap();
        let json = report_json(&eml);
        validate(&json, dir.path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["organization-name"], "Postern test");
        let p = &v["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        // A failed session names both ends: the MX host's address and
        // ours (sending-mta-ip).
        if p["policy"]["policy-domain"] == "cert.test" {
            let d = &p["failure-details"][0];
            assert_eq!(d["receiving-ip"], cert_ip.as_str(), "{d}");
            let ours: std::net::IpAddr = d["sending-mta-ip"].as_str().unwrap().parse().unwrap();
            assert!(ours.is_loopback(), "{d}");
        }
        seen.push((
            p["policy"]["policy-domain"].as_str().unwrap().to_string(),
            p["summary"]["total-successful-session-count"]
                .as_u64()
                .unwrap(),
            p["summary"]["total-failure-session-count"]
                .as_u64()
                .unwrap(),
            p["failure-details"][0]["result-type"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ));
    }
    // The same reports by HTTPS POST to the https: rua.
    wait_for("three POSTed reports", Duration::from_secs(30), || {
        web.join("post-3").exists().then_some(())
    });
    for n in 1..=3 {
        let kind = std::fs::read_to_string(web.join(format!("post-{n}.type"))).unwrap();
        assert_eq!(kind, "application/tlsrpt+gzip /v1/tlsrpt");
        let out = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg("import gzip, sys; sys.stdout.write(gzip.decompress(open(sys.argv[1], 'rb').read()).decode())")
            .arg(web.join(format!("post-{n}")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        validate(&String::from_utf8(out.stdout).unwrap(), dir.path()).unwrap();
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "bad.test".to_string(),
                0,
                1,
                "validation-failure".to_string()
            ),
            (
                "cert.test".to_string(),
                0,
                1,
                "certificate-host-mismatch".to_string()
            ),
            ("good.test".to_string(), 2, 0, String::new()),
        ]
    );
    assert!(bad.messages().is_empty());
    assert!(cert.messages().is_empty());
    let _ = server.kill();
    let _ = server.wait();
}
