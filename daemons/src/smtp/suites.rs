//! The smtp and lmtp clients' protocol and cipher settings: Postfix's
//! `*_tls_protocols`, `*_tls_ciphers` and `*_tls_exclude_ciphers` for
//! opportunistic TLS (`may`), their `*_tls_mandatory_*` twins for the
//! levels that require TLS, and a policy entry's `protocols=`,
//! `ciphers=` and `exclude=`, which replace them for one destination (the
//! entry's `exclude=` replaces both exclusion lists, as in Postfix).
//! postern_config::tlsproto says what each value means for rustls.
use postern_config::Params;
use postern_config::tlsproto::{self, Choice};

use super::tls::Level;

/// A policy entry's own protocol and cipher attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Overrides {
    pub protocols: Option<String>,
    pub ciphers: Option<String>,
    pub exclude: Option<String>,
}

impl Overrides {
    /// Takes `protocols=`, `ciphers=` or `exclude=` (checked); false for
    /// another attribute.
    pub fn take(&mut self, name: &str, value: &str) -> Result<bool, String> {
        let bad = |e: String| format!("{name}={value}: {e}");
        match name {
            "protocols" => {
                tlsproto::protocols(value).map_err(bad)?;
                self.protocols = Some(value.to_string());
            }
            "ciphers" => {
                tlsproto::grade(value).map_err(bad)?;
                self.ciphers = Some(value.to_string());
            }
            "exclude" => {
                tlsproto::exclusions(value).map_err(bad)?;
                self.exclude = Some(value.to_string());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Debug, Clone)]
pub struct Suites {
    protocols: String,
    mandatory_protocols: String,
    ciphers: String,
    mandatory_ciphers: String,
    exclude: String,
    mandatory_exclude: String,
}

impl Suites {
    /// `prefix` is smtp or lmtp. Both choices are made once here, so a
    /// combination that leaves nothing stops the role at start.
    pub fn from_params(p: &Params, prefix: &str) -> Result<Suites, String> {
        let v = |n: &str| p.str(&format!("{prefix}_tls_{n}")).to_string();
        let s = Suites {
            protocols: v("protocols"),
            mandatory_protocols: v("mandatory_protocols"),
            ciphers: v("ciphers"),
            mandatory_ciphers: v("mandatory_ciphers"),
            exclude: v("exclude_ciphers"),
            mandatory_exclude: v("mandatory_exclude_ciphers"),
        };
        let none = Overrides::default();
        s.choice(Level::May, &none)
            .map_err(|e| format!("{prefix}_tls_protocols, {prefix}_tls_exclude_ciphers: {e}"))?;
        s.choice(Level::Encrypt, &none).map_err(|e| {
            format!(
                "{prefix}_tls_mandatory_protocols, {prefix}_tls_exclude_ciphers, {prefix}_tls_mandatory_exclude_ciphers: {e}"
            )
        })?;
        Ok(s)
    }

    /// What a connection at `level` may negotiate.
    pub fn choice(&self, level: Level, o: &Overrides) -> Result<Choice, String> {
        let mandatory = !matches!(level, Level::None | Level::May);
        let pick = |own: &Option<String>, may: &'_ str, must: &'_ str| {
            own.clone()
                .unwrap_or_else(|| if mandatory { must } else { may }.to_string())
        };
        let protocols = pick(&o.protocols, &self.protocols, &self.mandatory_protocols);
        let grade = pick(&o.ciphers, &self.ciphers, &self.mandatory_ciphers);
        let excludes: Vec<&str> = match &o.exclude {
            Some(e) => vec![e],
            None if mandatory => vec![&self.exclude, &self.mandatory_exclude],
            None => vec![&self.exclude],
        };
        Choice::new(&protocols, &grade, &excludes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites(pairs: &[(&str, &str)]) -> Result<Suites, String> {
        let mut all: Vec<(String, String)> = [
            ("smtp_tls_protocols", ">=TLSv1"),
            ("smtp_tls_mandatory_protocols", ">=TLSv1"),
            ("smtp_tls_ciphers", "medium"),
            ("smtp_tls_mandatory_ciphers", "medium"),
            ("smtp_tls_exclude_ciphers", ""),
            ("smtp_tls_mandatory_exclude_ciphers", ""),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        for (n, v) in pairs {
            all.retain(|(a, _)| a != n);
            all.push((n.to_string(), v.to_string()));
        }
        Suites::from_params(&Params::from_pairs(all).map_err(|e| e.to_string())?, "smtp")
    }

    #[test]
    fn mandatory_settings_apply_to_the_levels_that_require_tls() {
        let s = suites(&[
            ("smtp_tls_mandatory_protocols", ">=TLSv1.3"),
            ("smtp_tls_mandatory_exclude_ciphers", "CHACHA20"),
        ])
        .unwrap();
        let none = Overrides::default();
        let may = s.choice(Level::May, &none).unwrap();
        assert!(may.versions.tls12 && may.exclude.is_empty());
        for l in [
            Level::Encrypt,
            Level::Verify,
            Level::Dane,
            Level::Fingerprint,
        ] {
            let c = s.choice(l, &none).unwrap();
            assert!(!c.versions.tls12 && c.versions.tls13, "{l:?}");
            assert_eq!(c.exclude.len(), 2, "{l:?}");
        }
        // A policy entry's attributes replace them, exclude= both lists.
        let mut o = Overrides::default();
        assert!(o.take("protocols", "TLSv1.2").unwrap());
        assert!(o.take("exclude", "aNULL").unwrap());
        assert!(!o.take("match", "x").unwrap());
        let c = s.choice(Level::Encrypt, &o).unwrap();
        assert!(c.versions.tls12 && !c.versions.tls13 && c.exclude.is_empty());
        assert!(
            o.take("ciphers", "null")
                .unwrap_err()
                .contains("ciphers=null")
        );
        assert!(
            o.take("protocols", "SSLv3")
                .unwrap_err()
                .contains("leaves neither")
        );
    }

    #[test]
    fn a_combination_that_leaves_nothing_is_refused() {
        let e = suites(&[
            ("smtp_tls_mandatory_protocols", "TLSv1.2"),
            ("smtp_tls_exclude_ciphers", "HIGH"),
        ])
        .unwrap_err();
        assert!(
            e.contains("smtp_tls_mandatory_protocols") && e.contains("no cipher suite"),
            "{e}"
        );
    }
}
