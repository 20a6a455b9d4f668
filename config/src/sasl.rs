//! `smtpd_sasl_security_options` and `smtpd_sasl_tls_security_options`:
//! which of Postern's SASL mechanisms a session may use.
//!
//! Postern's mechanisms are PLAIN and LOGIN. As with Cyrus SASL under
//! Postfix, both send the password in the clear (inside the session), so
//! `noplaintext`, `noactive`, `nodictionary`, `mutual_auth` and
//! `forward_secrecy` each leave no mechanism, and `noanonymous` (the
//! default) leaves both. The usual Postfix recipe
//! `smtpd_sasl_security_options = noanonymous, noplaintext` with
//! `smtpd_sasl_tls_security_options = noanonymous` therefore means: AUTH
//! only after STARTTLS.

const OPTIONS: &[&str] = &[
    "noanonymous",
    "noplaintext",
    "noactive",
    "nodictionary",
    "mutual_auth",
    "forward_secrecy",
];

/// Whether PLAIN and LOGIN remain under `options` (a list value).
pub fn plaintext_allowed(options: &str) -> Result<bool, String> {
    let mut allowed = true;
    for o in crate::value::split_list(options) {
        let o = o.to_ascii_lowercase();
        if !OPTIONS.contains(&o.as_str()) {
            return Err(format!(
                "unknown SASL security option \"{o}\" (expected {})",
                OPTIONS.join(", ")
            ));
        }
        if o != "noanonymous" {
            allowed = false;
        }
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn options() {
        assert_eq!(super::plaintext_allowed("noanonymous"), Ok(true));
        assert_eq!(super::plaintext_allowed(""), Ok(true));
        assert_eq!(
            super::plaintext_allowed("noanonymous, noplaintext"),
            Ok(false)
        );
        assert_eq!(super::plaintext_allowed("noactive"), Ok(false));
        assert!(super::plaintext_allowed("nosuch").is_err());
    }
}
