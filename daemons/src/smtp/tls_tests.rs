//! Tests of smtp/tls.rs: certificate match lists and policy table values.
use super::*;
use rustls::client::WebPkiServerVerifier;

/// A CA and leaf certificates it signed for `names`, as DER.
pub(in crate::smtp) fn chain(names: &[&[&str]]) -> (RootCertStore, Vec<CertificateDer<'static>>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let leaves = names
        .iter()
        .map(|n| {
            let p = CertificateParams::new(n.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
            p.signed_by(&KeyPair::generate().unwrap(), &ca)
                .unwrap()
                .der()
                .clone()
        })
        .collect();
    (roots, leaves)
}

/// `smtp_tls_secure_cert_match = nexthop, dot-nexthop` (the default) and
/// `smtp_tls_verify_cert_match = hostname`: which certificates pass for
/// next hop example.com reached at MX host mx1.example.com.
#[test]
fn cert_match_lists_decide_which_names_verify() {
    let (roots, leaves) = chain(&[
        &["example.com"],
        &["mx1.example.com"],
        &["*.mail.example.com"],
        &["mx.other.net"],
        &["example.com.evil.net"],
        &["notexample.com"],
    ]);
    let provider = crate::tls::provider();
    let verdicts = |matches: &[&str]| -> Vec<bool> {
        let pol = Policy::with_matches(
            Level::Secure,
            "",
            (roots.clone().into(), Arc::new(ClientCert::default())),
            matches.iter().map(|m| m.to_string()).collect(),
            Digest::Sha256,
            &postern_config::tlsproto::Choice::all(),
        )
        .unwrap();
        let v = AnyName {
            inner: WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                provider.clone(),
            )
            .build()
            .unwrap(),
            names: pol.wanted("mx1.example.com", "example.com"),
        };
        let any = ServerName::try_from("ignored.invalid").unwrap();
        leaves
            .iter()
            .map(|l| {
                v.verify_server_cert(l, &[], &any, &[], UnixTime::now())
                    .is_ok()
            })
            .collect()
    };
    assert_eq!(
        verdicts(&["nexthop", "dot-nexthop"]),
        [true, true, true, false, false, false]
    );
    assert_eq!(
        verdicts(&["nexthop"]),
        [true, false, false, false, false, false]
    );
    assert_eq!(
        verdicts(&["hostname"]),
        [false, true, false, false, false, false]
    );
    assert_eq!(
        verdicts(&[".mail.example.com"]),
        [false, false, true, false, false, false]
    );
    assert_eq!(
        verdicts(&["mx.other.net"]),
        [false, false, false, true, false, false]
    );
    // The SNI and first name: the first exact entry, else the level's.
    let pol = |m: &[&str]| {
        Policy::with_matches(
            Level::Secure,
            "",
            (roots.clone().into(), Arc::new(ClientCert::default())),
            m.iter().map(|s| s.to_string()).collect(),
            Digest::Sha256,
            &postern_config::tlsproto::Choice::all(),
        )
        .unwrap()
    };
    let name = |p: &Policy| format!("{:?}", p.name("mx1.example.com", "example.com"));
    assert!(name(&pol(&["dot-nexthop", "hostname"])).contains("mx1.example.com"));
    assert!(name(&pol(&["dot-nexthop"])).contains("\"example.com\""));
}

#[test]
fn policy_table_values_and_keys() {
    assert_eq!(
        parse_entry("verify match=hostname:mx.example.com protocols=!SSLv2,!SSLv3").unwrap(),
        Entry {
            level: Level::Verify,
            matches: vec!["hostname".into(), "mx.example.com".into()],
            servername: None,
            tafiles: Vec::new(),
            overrides: Overrides {
                protocols: Some("!SSLv2,!SSLv3".into()),
                ..Default::default()
            },
        }
    );
    // Protocol and cipher attributes are checked, never ignored.
    let e = parse_entry("encrypt ciphers=null").unwrap_err();
    assert!(
        e.contains("ciphers=null") && e.contains("no encryption"),
        "{e}"
    );
    assert!(parse_entry("encrypt protocols=TLSv1.1").is_err());
    assert!(parse_entry("encrypt exclude=NOSUCH").is_err());
    assert_eq!(
        parse_entry("secure ciphers=high exclude=3DES")
            .unwrap()
            .overrides
            .exclude
            .as_deref(),
        Some("3DES")
    );
    assert_eq!(parse_entry("encrypt").unwrap().level, Level::Encrypt);
    assert_eq!(
        parse_entry("encrypt servername=smtp.example.net")
            .unwrap()
            .servername
            .as_deref(),
        Some("smtp.example.net")
    );
    assert!(parse_entry("may servername=").is_err());
    assert_eq!(parse_entry("none").unwrap().level, Level::None);
    assert_eq!(parse_entry("dane").unwrap().level, Level::Dane);
    assert_eq!(parse_entry("dane-only").unwrap().level, Level::DaneOnly);
    for (bad, why) in [
        ("dane match=hostname", "does not apply"),
        ("verify tafile=etc/ta.pem", "an absolute path"),
        (
            "verify certfile=/etc/x.pem",
            "\"certfile\" is not supported",
        ),
        ("verify match", "expected name=value"),
        ("strict", "unknown TLS security level"),
        ("", "empty"),
    ] {
        let e = parse_entry(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
    assert_eq!(
        policy_keys("mail.sub.example.com"),
        [
            "mail.sub.example.com",
            ".sub.example.com",
            ".example.com",
            ".com"
        ]
    );
    assert_eq!(policy_keys("[192.0.2.1]:587"), ["[192.0.2.1]:587"]);
    assert_eq!(policy_keys("[relay.example.com]"), ["[relay.example.com]"]);
}
