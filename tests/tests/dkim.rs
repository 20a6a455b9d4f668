//! DKIM keys (issue 19's rotation command): `postern dkim keygen` makes
//! RSA and Ed25519 key pairs with aws-lc-rs and the DNS record for them;
//! dkimpy, an independent implementation, signs with each private key and
//! verifies against the published record.
use std::path::Path;
use std::process::Command;

use postern_tests::{bin, python_ok};

/// The TXT record's strings joined, as a resolver hands them to a verifier.
fn txt_value(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let inner = &text[text.find('(').unwrap() + 1..text.rfind(')').unwrap()];
    inner.split('"').skip(1).step_by(2).collect()
}

fn keygen(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["dkim", "keygen", "-d", "example.com", "-D"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn keygen_makes_keys_that_dkimpy_signs_and_verifies_with() {
    let dir = tempfile::tempdir().unwrap();
    for (sel, ty) in [("rsa2026", "rsa"), ("ed2026", "ed25519")] {
        let out = keygen(dir.path(), &["-s", sel, "-t", ty]);
        assert!(out.status.success(), "{out:?}");
        let private = dir.path().join(format!("{sel}.private"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&private).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let txt = txt_value(&dir.path().join(format!("{sel}.txt")));
        assert!(txt.starts_with(&format!("v=DKIM1; k={ty}; p=")), "{txt}");
        // The printed record is the file's.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.path().join(format!("{sel}.txt"))).unwrap()
        );
        // dkimpy takes PEM for RSA, and the raw 32-byte seed (base64) for
        // Ed25519: the last 32 bytes of the PKCS#8 DER, through openssl.
        let alg = if ty == "rsa" {
            "rsa-sha256"
        } else {
            "ed25519-sha256"
        };
        let key_expr = if ty == "rsa" {
            format!("open({:?}, 'rb').read()", private.display().to_string())
        } else {
            format!(
                "base64.b64encode(subprocess.run(['openssl', 'pkey', '-in', {:?}, '-outform', 'DER'], capture_output=True, check=True).stdout[-32:])",
                private.display().to_string()
            )
        };
        let out = python_ok(&format!(
            "import base64, subprocess, dkim\n\
             msg = b'From: alerts@example.com\\r\\nTo: admin@example.net\\r\\nSubject: disk 91% full\\r\\n\\r\\nsee the appliance\\r\\n'\n\
             sig = dkim.sign(msg, b'{sel}', b'example.com', {key_expr}, include_headers=[b'from', b'to', b'subject'], signature_algorithm=b'{alg}')\n\
             txt = {txt:?}.encode()\n\
             def dns(name, timeout=5):\n    assert name == b'{sel}._domainkey.example.com.', name\n    return txt\n\
             print(dkim.verify(sig + msg, dnsfunc=dns))\n\
             print(dkim.verify(sig + msg.replace(b'91%', b'19%'), dnsfunc=dns))\n"
        ));
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["True", "False"],
            "{ty}: {out}"
        );
    }
    // Rotation is a new selector: an existing one is never overwritten.
    let before = std::fs::read(dir.path().join("rsa2026.private")).unwrap();
    let out = keygen(dir.path(), &["-s", "rsa2026"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rsa2026.private exists"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("rsa2026.private")).unwrap(),
        before
    );
    let out = keygen(dir.path(), &["-s", "rsa1024", "-b", "1024"]);
    assert!(!out.status.success(), "a 1024-bit key was made");
}
