//! The SASL password file (`smtpd_sasl_password_file`): one `user:hash`
//! per line, the hash an Argon2id PHC string; `#` starts a comment.
//! `postern passwd` writes it (whole file to a temporary name, fsynced,
//! renamed into place), and the auth role reads it again whenever it
//! changes, so a new password works at once, without a reload.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

pub type Table = HashMap<String, String>;

/// A user name we store: printable ASCII without `:` or spaces.
pub fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= postern_ipc::auth::MAX_USER
        && u.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Parses the file; errors name the file and line.
pub fn parse(text: &str, path: &Path) -> Result<Table, String> {
    let mut t = Table::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}, line {}", path.display(), n + 1);
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("{}: expected user:hash", at()));
        };
        if !valid_user(user) {
            return Err(format!("{}: bad user name \"{user}\"", at()));
        }
        PasswordHash::new(hash).map_err(|e| format!("{}: bad password hash: {e}", at()))?;
        t.insert(user.to_string(), hash.to_string());
    }
    Ok(t)
}

/// An Argon2id hash of `password` with a fresh random salt.
pub fn hash(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut salt)
        .map_err(|_| "no randomness for the salt".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Does `password` match the PHC string `hash`? (Constant time in the
/// password; slow by design.)
pub fn verify(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
}

/// Identity of a file's version: inode, size, mtime (s, ns).
pub type FileId = (u64, u64, i64, i64);

/// Identity of the file's current version, to notice replacements.
pub fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Sets (Some) or removes (None) `user`'s password in the file at `path`,
/// creating it. `owner`: (uid, gid) for the new file (root mode: root and
/// the auth role's group, mode 0640).
pub fn update(
    path: &Path,
    user: &str,
    password: Option<&[u8]>,
    owner: Option<(u32, u32)>,
) -> Result<bool, String> {
    if !valid_user(user) {
        return Err(format!(
            "bad user name \"{user}\": use printable characters without ':' or spaces"
        ));
    }
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    // Refuse to rewrite a file we cannot read: it would lose its lines.
    parse(&old, path)?;
    let mut found = false;
    let mut out = String::new();
    for line in old.lines() {
        let is_user = line.trim().split_once(':').is_some_and(|(u, _)| u == user)
            && !line.trim_start().starts_with('#');
        if is_user {
            found = true;
            if let Some(p) = password {
                out.push_str(&format!("{user}:{}\n", hash(p)?));
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        match password {
            Some(p) => out.push_str(&format!("{user}:{}\n", hash(p)?)),
            None => return Ok(false),
        }
    }
    crate::fsutil::write_atomically(path, out.as_bytes(), owner)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_change_remove_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        assert!(update(&p, "alice", Some(b"one two"), None).unwrap());
        assert!(update(&p, "bob", Some(b"b"), None).unwrap());
        let t = parse(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
        assert!(verify(&t["alice"], b"one two"));
        assert!(!verify(&t["alice"], b"one tw0"));
        assert!(t["alice"].starts_with("$argon2id$"));
        update(&p, "alice", Some(b"new"), None).unwrap();
        let t = parse(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
        assert!(verify(&t["alice"], b"new") && verify(&t["bob"], b"b"));
        assert!(update(&p, "alice", None, None).unwrap());
        assert!(!update(&p, "alice", None, None).unwrap());
        let t = parse(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
        assert_eq!(t.len(), 1);
        assert!(update(&p, "bad:name", Some(b"x"), None).is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let p = Path::new("/etc/x/passwd");
        let text = format!("# c\nalice:{}\nbroken\n", hash(b"pw").unwrap());
        let e = parse(&text, p).unwrap_err();
        assert!(e.contains("/etc/x/passwd, line 3"), "{e}");
        let e = parse("carol:plaintext\n", p).unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("bad password hash"),
            "{e}"
        );
    }
}
