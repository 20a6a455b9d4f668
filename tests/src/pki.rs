//! A throwaway certificate authority for TLS tests: a CA, a server
//! certificate for a host name, and a client certificate, as PEM files.
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    /// The CA certificate (for -CAfile, smtp_tls_CAfile, ssl contexts).
    pub ca: PathBuf,
    /// Key, leaf certificate and CA certificate in one file (Postfix's
    /// smtpd_tls_chain_files layout).
    pub server_chain: PathBuf,
    /// The server key alone, and the leaf plus CA alone.
    pub server_key: PathBuf,
    pub server_cert: PathBuf,
    /// A client certificate and key (smtp_tls_cert_file, _key_file).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// A fresh test CA named after `tag`.
fn new_ca(tag: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Postern Test CA {tag}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap()
}

/// Creates the files under `dir` (names prefixed by `tag`), the server
/// certificate valid for `host`.
pub fn make(dir: &Path, tag: &str, host: &str) -> Pki {
    let ca = new_ca(tag);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &ca).unwrap();
        (key, cert)
    };
    let (skey, scert) = leaf(host);
    let (ckey, ccert) = leaf(&format!("client.{host}"));
    let f = |n: &str| dir.join(format!("{tag}-{n}.pem"));
    let pki = Pki {
        ca: f("ca"),
        server_chain: f("server-chain"),
        server_key: f("server-key"),
        server_cert: f("server-cert"),
        client_cert: f("client-cert"),
        client_key: f("client-key"),
    };
    write(&pki.ca, &ca.pem());
    write(
        &pki.server_chain,
        &format!("{}{}{}", skey.serialize_pem(), scert.pem(), ca.pem()),
    );
    write(&pki.server_key, &skey.serialize_pem());
    write(&pki.server_cert, &format!("{}{}", scert.pem(), ca.pem()));
    write(&pki.client_cert, &ccert.pem());
    write(&pki.client_key, &ckey.serialize_pem());
    pki
}

/// One CA and server certificates it issued, each for its own names.
pub struct Issued {
    /// The CA certificate.
    pub ca: PathBuf,
    /// Per certificate asked for: the leaf plus the CA (a chain file), and
    /// its key.
    pub certs: Vec<(PathBuf, PathBuf)>,
}

/// Creates a CA under `dir` (names prefixed by `tag`) and one server
/// certificate for each list of names in `certs`.
pub fn issue(dir: &Path, tag: &str, certs: &[&[&str]]) -> Issued {
    let ca = new_ca(tag);
    let ca_path = dir.join(format!("{tag}-ca.pem"));
    write(&ca_path, &ca.pem());
    let certs = certs
        .iter()
        .enumerate()
        .map(|(i, names)| {
            let key = KeyPair::generate().unwrap();
            let mut p =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap();
            p.distinguished_name.push(DnType::CommonName, names[0]);
            let cert = p.signed_by(&key, &ca).unwrap();
            let chain = dir.join(format!("{tag}-{i}-chain.pem"));
            let key_path = dir.join(format!("{tag}-{i}-key.pem"));
            write(&chain, &format!("{}{}", cert.pem(), ca.pem()));
            write(&key_path, &key.serialize_pem());
            (chain, key_path)
        })
        .collect();
    Issued { ca: ca_path, certs }
}
