//! A user's `.forward` (forward_path), followed one level.
//!
//! The file is opened by the master (this role cannot read a home): only a
//! `.forward*` file directly in the home of a passwd user other than root,
//! not a symbolic link, owned by the user or root and writable by nobody
//! else; anything else is an error and the delivery waits. Root's
//! .forward is never read (alias root instead).
//!
//! It holds addresses only, separated by commas or lines: a remote address
//! is forwarded, a local name goes through the aliases to its mailbox
//! (not to another .forward), `\user` is that user's mailbox. A command, a
//! file or an include is refused with a bounce that says so, before
//! anything is delivered: Postern never runs or writes what a .forward
//! names (a deliberate difference from Postfix).
use std::path::Path;

use super::{EXPANSION_LIMIT, ExpandError, Local, Target};

/// At most this much of a .forward is read.
const FORWARD_CAP: u64 = 64 * 1024;

impl Local {
    /// The extension of a recipient's local part (recipient_delimiter).
    pub(super) fn extension(&self, local: &str) -> Option<String> {
        if self.s.delimiter.is_empty() {
            return None;
        }
        let i = local.find(|c| self.s.delimiter.contains(c))?;
        (i > 0).then(|| local[i + 1..].to_string())
    }

    /// The home directory of `user`, from the passwd table; None for root
    /// or a user without one.
    pub(super) async fn home_of(&self, user: &str) -> Result<Option<String>, String> {
        let Some(line) = self
            .tables
            .lookup(&crate::tables::Table::Passwd, user)
            .await?
        else {
            return Ok(None);
        };
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[2] == "0" || f[5].is_empty() || f[5] == "/" {
            return Ok(None);
        }
        Ok(Some(f[5].to_string()))
    }

    /// What `user`'s .forward says, or None when there is none.
    pub(super) async fn dot_forward(
        &self,
        user: &str,
        ext: Option<&str>,
    ) -> Result<Option<Vec<Target>>, String> {
        let Some(home) = self.home_of(user).await? else {
            return Ok(None);
        };
        let mut tried = Vec::new();
        for template in &self.s.forward_path {
            let Some(path) = expand(template, &home, user, ext, &self.s.delimiter) else {
                continue;
            };
            if tried.contains(&path) {
                continue;
            }
            tried.push(path.clone());
            let fd = match self.sb.open_table(Path::new(&path)).await {
                Ok(Some(fd)) => fd,
                Ok(None) => continue,
                Err(e) => return Err(format!(".forward of {user}: {e}")),
            };
            let data =
                crate::fsutil::read_whole(&fd, FORWARD_CAP).map_err(|e| format!("{path}: {e}"))?;
            let text = String::from_utf8_lossy(&data);
            return self.items(&text).await.map(Some);
        }
        Ok(None)
    }

    /// The targets of a .forward's text.
    async fn items(&self, text: &str) -> Result<Vec<Target>, String> {
        let mut out = Vec::new();
        for item in text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(|i| i.trim().trim_matches('"'))
            .filter(|i| !i.is_empty())
        {
            if out.len() >= EXPANSION_LIMIT {
                return Err(format!(
                    ".forward names more than {EXPANSION_LIMIT} addresses"
                ));
            }
            if item.starts_with('|') {
                out.push(Target::Unsupported("command".into()));
            } else if item.starts_with('/') {
                out.push(Target::Unsupported("file".into()));
            } else if item.starts_with(":include:") {
                out.push(Target::Unsupported(":include:".into()));
            } else if let Some(user) = item.strip_prefix('\\') {
                out.push(Target::Mailbox(user.to_ascii_lowercase()));
            } else {
                let local = match item.rsplit_once('@') {
                    Some((lp, dom))
                        if self
                            .s
                            .mydestination
                            .iter()
                            .any(|d| d.eq_ignore_ascii_case(dom)) =>
                    {
                        lp
                    }
                    Some(_) => {
                        out.push(Target::Remote(item.to_string()));
                        continue;
                    }
                    None => item,
                };
                // A local name: through the aliases, to mailboxes.
                let expanded =
                    self.expand(&local.to_ascii_lowercase())
                        .await
                        .map_err(|e| match e {
                            ExpandError::Limit => "alias expansion limit in a .forward".to_string(),
                            ExpandError::Tempfail(e) => e,
                        })?;
                out.extend(expanded.into_iter().map(|t| match t {
                    Target::User(u) => Target::Mailbox(u),
                    other => other,
                }));
            }
        }
        Ok(out)
    }
}

/// One forward_path template for this user, or None when it names
/// something Postern does not expand.
fn expand(
    template: &str,
    home: &str,
    user: &str,
    ext: Option<&str>,
    delim: &str,
) -> Option<String> {
    let (d, e) = match ext {
        Some(e) if !e.is_empty() => (
            delim.chars().next().map(String::from).unwrap_or_default(),
            e,
        ),
        _ => (String::new(), ""),
    };
    let mut s = template.to_string();
    for (names, value) in [
        (["${home}", "$home"], home),
        (["${user}", "$user"], user),
        (
            ["${recipient_delimiter}", "$recipient_delimiter"],
            d.as_str(),
        ),
        (["${extension}", "$extension"], e),
    ] {
        for n in names {
            s = s.replace(n, value);
        }
    }
    (!s.contains('$') && s.starts_with('/')).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn forward_path_templates() {
        let t = "$home/.forward${recipient_delimiter}${extension}";
        assert_eq!(
            expand(t, "/home/a", "a", Some("lists"), "+").as_deref(),
            Some("/home/a/.forward+lists")
        );
        assert_eq!(
            expand(t, "/home/a", "a", None, "+").as_deref(),
            Some("/home/a/.forward")
        );
        assert_eq!(
            expand("$home/.forward.$domain", "/home/a", "a", None, "+"),
            None
        );
        assert_eq!(expand("relative/.forward", "/home/a", "a", None, "+"), None);
    }
}
