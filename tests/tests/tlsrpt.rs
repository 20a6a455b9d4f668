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
        .arg(dir.path().join("report.eml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
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
