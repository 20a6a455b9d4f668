//! Postfix's TLS protocol and cipher settings, read for Postern's one TLS
//! library: rustls speaks TLS 1.2 and 1.3 only, with nine AEAD cipher
//! suites, all with forward secrecy (six for TLS 1.2, three for 1.3).
//!
//! - `*_tls_protocols`, `*_tls_mandatory_protocols`, a policy entry's
//!   `protocols=`: Postfix's syntax (`>=TLSv1.2`, `<=TLSv1.3`, `!SSLv3`,
//!   `TLSv1.2:TLSv1.3`), read as tls_proto_mask_lims() reads it. What is
//!   left of TLS 1.2 and 1.3 is used; a list that leaves neither is an
//!   error, never "TLS off".
//! - `*_tls_ciphers`, `*_tls_mandatory_ciphers`, `ciphers=`: a grade.
//!   Every suite Postern has is of grade high, so export, low, medium and
//!   high all allow them all; `null` (no encryption) cannot be honoured
//!   and is an error.
//! - `*_tls_exclude_ciphers`, `*_tls_mandatory_exclude_ciphers`,
//!   `exclude=`: OpenSSL cipher names and aliases. The ones that name some
//!   of Postern's suites remove them (TLS 1.3 suites too, by their IANA
//!   names, which OpenSSL would ignore here: the safe direction); the
//!   ones that name only algorithms rustls never offers (aNULL, RC4, 3DES,
//!   ...) and full suite names Postern lacks remove nothing; any other
//!   word is an error, so an exclusion is never silently dropped.
use std::collections::BTreeSet;

/// Which of the TLS versions Postern speaks a setting leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Versions {
    pub tls12: bool,
    pub tls13: bool,
}

impl Versions {
    pub const ALL: Versions = Versions {
        tls12: true,
        tls13: true,
    };
}

/// Protocol names in order, as Postfix spells them.
const PROTOCOLS: [&str; 6] = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
const TLS12: usize = 4;
const TLS13: usize = 5;

fn protocol(name: &str) -> Result<usize, String> {
    PROTOCOLS.iter().position(|p| *p == name).ok_or_else(|| {
        format!(
            "unknown TLS protocol \"{name}\" (expected one of {})",
            PROTOCOLS.join(", ")
        )
    })
}

/// A protocol setting: the TLS versions it leaves of 1.2 and 1.3.
pub fn protocols(v: &str) -> Result<Versions, String> {
    let mut include = [false; 6];
    let mut exclude = [false; 6];
    let (mut floor, mut ceiling) = (0, PROTOCOLS.len() - 1);
    let mut any_include = false;
    for tok in v
        .split(|c: char| c == ',' || c == ':' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        if let Some(n) = tok.strip_prefix(">=") {
            floor = protocol(n)?;
        } else if let Some(n) = tok.strip_prefix("<=") {
            ceiling = protocol(n)?;
        } else if let Some(n) = tok.strip_prefix('!') {
            exclude[protocol(n)?] = true;
        } else {
            include[protocol(tok)?] = true;
            any_include = true;
        }
    }
    let allowed =
        |i: usize| (!any_include || include[i]) && !exclude[i] && floor <= i && i <= ceiling;
    let out = Versions {
        tls12: allowed(TLS12),
        tls13: allowed(TLS13),
    };
    if !out.tls12 && !out.tls13 {
        return Err("leaves neither TLSv1.2 nor TLSv1.3, the protocols Postern speaks".into());
    }
    Ok(out)
}

/// A cipher grade: Ok when Postern's suites satisfy it.
pub fn grade(v: &str) -> Result<(), String> {
    match v.trim() {
        "export" | "low" | "medium" | "high" => Ok(()),
        "null" => Err(
            "the null grade (no encryption) cannot be honoured: every cipher Postern has encrypts"
                .into(),
        ),
        other => Err(format!(
            "unknown cipher grade \"{other}\" (expected high, medium, low or export)"
        )),
    }
}

/// Postern's suites by their OpenSSL names: TLS 1.2 (key exchange,
/// authentication, cipher, digest), then TLS 1.3.
pub const SUITES: [&str; 9] = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
];

fn is_tls13(suite: &str) -> bool {
    suite.starts_with("TLS_")
}

/// OpenSSL aliases that name some of Postern's TLS 1.2 suites: the
/// suites whose name has the part (as OpenSSL 3 reads them; a test holds
/// the table against `openssl ciphers`).
pub const ALIASES: &[(&str, &str)] = &[
    ("HIGH", "ECDHE"),
    ("ALL", "ECDHE"),
    ("DEFAULT", "ECDHE"),
    ("TLSv1.2", "ECDHE"),
    ("ECDHE", "ECDHE"),
    ("EECDH", "ECDHE"),
    ("kECDHE", "ECDHE"),
    ("kEECDH", "ECDHE"),
    ("ECDH", "ECDHE"),
    ("AES", "GCM"),
    ("AESGCM", "GCM"),
    ("AES128", "AES128"),
    ("AES256", "AES256"),
    ("CHACHA20", "CHACHA20"),
    ("ECDSA", "ECDSA"),
    ("aECDSA", "ECDSA"),
    ("aRSA", "RSA"),
];

/// OpenSSL aliases that name none of Postern's suites (algorithms rustls
/// never offers; `RSA` is RSA key exchange; `SHA256` a MAC): excluding
/// them removes nothing.
pub const ABSENT: &[&str] = &[
    "aNULL",
    "eNULL",
    "NULL",
    "COMPLEMENTOFDEFAULT",
    "COMPLEMENTOFALL",
    "EXPORT",
    "EXP",
    "EXPORT40",
    "EXPORT56",
    "LOW",
    "MEDIUM",
    "DES",
    "3DES",
    "RC4",
    "RC2",
    "MD5",
    "SHA1",
    "SHA",
    "SEED",
    "IDEA",
    "CAMELLIA",
    "CAMELLIA128",
    "CAMELLIA256",
    "ARIA",
    "ARIA128",
    "ARIA256",
    "PSK",
    "kPSK",
    "aPSK",
    "kECDHEPSK",
    "kDHEPSK",
    "kRSAPSK",
    "SRP",
    "kSRP",
    "aSRP",
    "DSS",
    "aDSS",
    "DH",
    "DHE",
    "EDH",
    "kDHE",
    "kEDH",
    "kDHr",
    "kDHd",
    "kDH",
    "aDH",
    "ADH",
    "AECDH",
    "kECDHr",
    "kECDHe",
    "kECDH",
    "aECDH",
    "kRSA",
    "GOST",
    "aGOST",
    "aGOST01",
    "kGOST",
    "GOST94",
    "GOST89MAC",
    "AESCCM",
    "AESCCM8",
    "SSLv3",
    "TLSv1",
    "TLSv1.0",
    "RSA",
    "SHA256",
    "SHA384",
    "AEAD",
];

/// An exclusion list: the names (of [`SUITES`]) it removes.
pub fn exclusions(v: &str) -> Result<BTreeSet<&'static str>, String> {
    let mut out = BTreeSet::new();
    for word in v
        .split(|c: char| c == ',' || c == ':' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        if let Some(s) = SUITES.iter().find(|s| **s == word) {
            out.insert(*s);
        } else if let Some((_, part)) = ALIASES.iter().find(|(a, _)| *a == word) {
            for s in SUITES.iter().filter(|s| !is_tls13(s)) {
                if s.split('-').any(|x| x == *part) {
                    out.insert(*s);
                }
            }
        } else if ABSENT.contains(&word) || is_full_suite_name(word) {
            // Nothing of ours to remove.
        } else {
            return Err(format!(
                "cipher \"{word}\" is not known to Postern: it cannot tell what to exclude"
            ));
        }
    }
    Ok(out)
}

/// An OpenSSL suite name (`DES-CBC3-SHA`, `AES128-GCM-SHA256`,
/// `TLS_AES_128_CCM_SHA256`), which names one suite and no alias.
fn is_full_suite_name(w: &str) -> bool {
    let parts = w.split(['-', '_']).count();
    parts >= 2
        && w.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What a TLS endpoint may negotiate: versions, and the suites excluded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Choice {
    pub versions: Versions,
    pub exclude: BTreeSet<&'static str>,
}

impl Choice {
    /// All of it: TLS 1.2 and 1.3, every suite.
    pub fn all() -> Choice {
        Choice {
            versions: Versions::ALL,
            exclude: BTreeSet::new(),
        }
    }

    /// From a protocol list, a grade, and exclusion lists.
    pub fn new(protocols_v: &str, grade_v: &str, excludes: &[&str]) -> Result<Choice, String> {
        let mut versions = protocols(protocols_v)?;
        grade(grade_v)?;
        let mut exclude = BTreeSet::new();
        for e in excludes {
            exclude.extend(exclusions(e)?);
        }
        let left = |tls13: bool| {
            SUITES
                .iter()
                .any(|s| is_tls13(s) == tls13 && !exclude.contains(s))
        };
        versions.tls12 &= left(false);
        versions.tls13 &= left(true);
        if !versions.tls12 && !versions.tls13 {
            return Err(
                "the protocols and cipher exclusions leave no cipher suite to negotiate".into(),
            );
        }
        Ok(Choice { versions, exclude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Versions = Versions::ALL;
    const ONLY13: Versions = Versions {
        tls12: false,
        tls13: true,
    };
    const ONLY12: Versions = Versions {
        tls12: true,
        tls13: false,
    };

    #[test]
    fn protocol_lists_as_postfix_reads_them() {
        for (v, want) in [
            ("", BOTH),
            (">=TLSv1", BOTH),
            ("!SSLv2, !SSLv3", BOTH),
            ("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", BOTH),
            (">=TLSv1.2", BOTH),
            (">=TLSv1.3", ONLY13),
            ("TLSv1.3", ONLY13),
            ("!TLSv1.2", ONLY13),
            ("<=TLSv1.2", ONLY12),
            ("TLSv1.2 TLSv1.1", ONLY12),
            ("TLSv1.2:TLSv1.3 !TLSv1.3", ONLY12),
        ] {
            assert_eq!(protocols(v), Ok(want), "{v}");
        }
        for v in [
            "TLSv1",
            "TLSv1.1",
            "<=TLSv1.1",
            "!TLSv1.2 !TLSv1.3",
            ">=TLSv1.3 <=TLSv1.2",
        ] {
            assert!(protocols(v).unwrap_err().contains("leaves neither"), "{v}");
        }
        for v in ["TLSv1.4", ">=tlsv1.2", "SSLv4", ">="] {
            assert!(
                protocols(v).unwrap_err().contains("unknown TLS protocol"),
                "{v}"
            );
        }
    }

    #[test]
    fn grades() {
        for g in ["export", "low", "medium", "high", " high "] {
            assert_eq!(grade(g), Ok(()));
        }
        assert!(grade("null").unwrap_err().contains("no encryption"));
        assert!(
            grade("strong")
                .unwrap_err()
                .contains("unknown cipher grade")
        );
    }

    #[test]
    fn exclusions_remove_what_they_name_and_refuse_what_is_unknown() {
        let ex = |v: &str| exclusions(v).unwrap().into_iter().collect::<Vec<_>>();
        assert!(ex("aNULL, eNULL, RC4, 3DES, MD5 DES-CBC3-SHA:AES128-SHA").is_empty());
        assert_eq!(
            ex("CHACHA20"),
            [
                "ECDHE-ECDSA-CHACHA20-POLY1305",
                "ECDHE-RSA-CHACHA20-POLY1305"
            ]
        );
        assert_eq!(
            ex("aRSA RSA"),
            [
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-RSA-CHACHA20-POLY1305"
            ]
        );
        assert_eq!(
            ex("AES128 TLS_AES_128_GCM_SHA256"),
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "TLS_AES_128_GCM_SHA256"
            ]
        );
        assert_eq!(ex("HIGH").len(), 6, "aliases reach TLS 1.2 suites only");
        for w in ["aes128", "FOO", "!aNULL", "+RC4", "@STRENGTH", "SUITEB128"] {
            assert!(exclusions(w).unwrap_err().contains("not known"), "{w}");
        }
    }

    #[test]
    fn a_choice_drops_a_version_whose_suites_are_all_excluded() {
        let c = Choice::new(">=TLSv1", "medium", &["", "HIGH"]).unwrap();
        assert_eq!(c.versions, ONLY13);
        let c = Choice::new(
            "",
            "high",
            &["TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256"],
        )
        .unwrap();
        assert_eq!(c.versions, ONLY12);
        assert!(
            Choice::new(
                ">=TLSv1.3",
                "high",
                &["TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"]
            )
            .unwrap_err()
            .contains("no cipher suite")
        );
        assert!(Choice::new("", "null", &[]).is_err());
        assert_eq!(
            Choice::new(">=TLSv1", "medium", &[""]).unwrap(),
            Choice::all()
        );
    }

    /// The alias tables say what OpenSSL 3 says each alias names among
    /// Postern's TLS 1.2 suites.
    #[test]
    fn aliases_agree_with_openssl() {
        let openssl = |alias: &str| -> BTreeSet<String> {
            let out = std::process::Command::new("openssl")
                .args(["ciphers", "-s", "-tls1_2", alias])
                .output()
                .expect("openssl(1) runs");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .split(':')
                .filter(|s| SUITES[..6].contains(s))
                .map(str::to_string)
                .collect()
        };
        for alias in ALIASES.iter().map(|(a, _)| a).chain(ABSENT) {
            let ours: BTreeSet<String> = exclusions(alias)
                .unwrap()
                .into_iter()
                .map(str::to_string)
                .collect();
            assert_eq!(ours, openssl(alias), "{alias}");
        }
        assert_eq!(
            openssl("HIGH").len(),
            6,
            "openssl knows Postern's six suites"
        );
    }
}
