//! The certificate of a fresh install: like Debian's "snakeoil", generated
//! once on first start so that STARTTLS and port 465 work out of the box.
//! An admin replaces it by setting `smtpd_tls_chain_files` (or
//! `smtpd_tls_cert_file` and `smtpd_tls_key_file`).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Creates `path` (key and certificate for `hostname`, mode 0600) unless it
/// exists. Returns true when it made one.
pub fn ensure(path: &Path, hostname: &str) -> Result<bool, String> {
    if path.exists() {
        return Ok(false);
    }
    let dir = path.parent().ok_or("no directory for the certificate")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot chmod {}: {e}", dir.display()))?;
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .map_err(|e| format!("self-signed certificate for {hostname}: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    crate::fsutil::write_atomically(path, pem.as_bytes(), None)?;
    Ok(true)
}
