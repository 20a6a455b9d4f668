//! `$name`, `${name}`, `$(name)`, `${name?text}`, `${name:text}` and
//! `${name?{text1}:{text2}}` expansion, as in Postfix.

/// Recursion depth at which expansion gives up (a loop like `a = $b`, `b = $a`).
pub const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    Undefined(String),
    Loop(String),
    Syntax(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Undefined(n) => write!(f, "undefined parameter: ${n}"),
            ExpandError::Loop(n) => write!(f, "recursive expansion of ${n}"),
            ExpandError::Syntax(s) => write!(f, "bad $ expression: {s}"),
        }
    }
}

/// Expands `value`, looking names up with `get` (which returns the raw,
/// unexpanded value, or None when the parameter does not exist).
pub fn expand(value: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    expand_depth(value, get, 0, &mut Vec::new())
}

/// Names that `value` refers to (for "is this user parameter used" checks).
pub fn references(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            let (name, _) = match b[i + 1] {
                b'{' | b'(' => {
                    let start = i + 2;
                    let end = start
                        + b[start..]
                            .iter()
                            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                            .count();
                    (&value[start..end], end)
                }
                _ => {
                    let start = i + 1;
                    let end = start
                        + b[start..]
                            .iter()
                            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                            .count();
                    (&value[start..end], end)
                }
            };
            if !name.is_empty() {
                out.push(name.to_string());
            }
        }
        i += 1;
    }
    out
}

fn is_name(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn expand_depth(
    value: &str,
    get: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    stack: &mut Vec<String>,
) -> Result<String, ExpandError> {
    if depth > MAX_DEPTH {
        return Err(ExpandError::Loop(stack.last().cloned().unwrap_or_default()));
    }
    let b = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let next = value[i..].find('$').map_or(b.len(), |n| i + n);
            out.push_str(&value[i..next]);
            i = next;
            continue;
        }
        // A lone '$' at the end, or '$' before a non-name: keep it literally.
        let Some(&c) = b.get(i + 1) else {
            out.push('$');
            break;
        };
        let (name, modifier, end) = if c == b'{' || c == b'(' {
            let close = if c == b'{' { b'}' } else { b')' };
            let start = i + 2;
            let name_end = start + b[start..].iter().take_while(|c| is_name(**c)).count();
            let name = &value[start..name_end];
            if name.is_empty() {
                return Err(ExpandError::Syntax(value[i..].chars().take(20).collect()));
            }
            // Find the matching close, allowing nested braces in the text.
            let mut depth_b = 1usize;
            let mut j = name_end;
            while j < b.len() {
                if b[j] == c {
                    depth_b += 1;
                } else if b[j] == close {
                    depth_b -= 1;
                    if depth_b == 0 {
                        break;
                    }
                }
                j += 1;
            }
            if j >= b.len() {
                return Err(ExpandError::Syntax(format!(
                    "missing '{}' after ${}",
                    close as char, name
                )));
            }
            let modifier = &value[name_end..j];
            (name, Some(modifier), j + 1)
        } else if is_name(c) {
            let start = i + 1;
            let end = start + b[start..].iter().take_while(|c| is_name(**c)).count();
            (&value[start..end], None, end)
        } else {
            out.push('$');
            i += 1;
            continue;
        };
        let raw = get(name);
        match modifier.filter(|m| !m.is_empty()) {
            None => {
                let raw = raw.ok_or_else(|| ExpandError::Undefined(name.to_string()))?;
                if stack.iter().any(|n| n == name) {
                    return Err(ExpandError::Loop(name.to_string()));
                }
                stack.push(name.to_string());
                out.push_str(&expand_depth(&raw, get, depth + 1, stack)?);
                stack.pop();
            }
            Some(m) => {
                // ${name?text}: text when name is non-empty; ${name:text}: when empty;
                // ${name?{t}:{f}}: either.
                let set = match raw {
                    Some(r) => {
                        stack.push(name.to_string());
                        let v = expand_depth(&r, get, depth + 1, stack)?;
                        stack.pop();
                        !v.is_empty()
                    }
                    None => false,
                };
                let text = conditional_text(m, set)
                    .ok_or_else(|| ExpandError::Syntax(format!("${{{name}{m}}}")))?;
                out.push_str(&expand_depth(text, get, depth + 1, stack)?);
            }
        }
        i = end;
    }
    Ok(out)
}

fn conditional_text(m: &str, set: bool) -> Option<&str> {
    // The modifier may start with any character, not only ASCII.
    let mut chars = m.chars();
    let op = chars.next()?;
    let rest = chars.as_str();
    if op == '?' && rest.starts_with('{') {
        // {t}:{f}
        let close = matching_brace(rest)?;
        let t = &rest[1..close];
        let after = rest[close + 1..].trim_start();
        let f = after
            .strip_prefix(':')
            .map(str::trim_start)
            .and_then(|f| f.strip_prefix('{')?.strip_suffix('}'))
            .unwrap_or("");
        return Some(if set { t } else { f });
    }
    match op {
        '?' => Some(if set { rest } else { "" }),
        ':' => Some(if set { "" } else { rest }),
        _ => None,
    }
}

fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(map: &[(&str, &str)], v: &str) -> Result<String, ExpandError> {
        let m: HashMap<String, String> = map
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        expand(v, &|n| m.get(n).cloned())
    }

    /// Found by the config_files fuzz target (fuzz/regressions/config_files/
    /// non-ascii-modifier): `${name` followed by a multi-byte character
    /// sliced a string inside that character and panicked, so a typo in
    /// main.cf crashed `postern conf --check` and the master.
    #[test]
    fn a_non_ascii_modifier_is_a_syntax_error_not_a_panic() {
        let r = with(&[("a", "x")], "${a\u{e9}t\u{e9}}");
        assert!(matches!(r, Err(ExpandError::Syntax(_))), "{r:?}");
        let r = with(&[("a", "x")], "${a\u{fffd}}");
        assert!(matches!(r, Err(ExpandError::Syntax(_))), "{r:?}");
        assert_eq!(with(&[("a", "x")], "${a?\u{e9}}").unwrap(), "\u{e9}");
    }

    #[test]
    fn forms() {
        let m = [("a", "x"), ("b", "$a-y"), ("e", "")];
        assert_eq!(with(&m, "$a ${a} $(a) $b").unwrap(), "x x x x-y");
        assert_eq!(with(&m, "${a?set}|${e?set}").unwrap(), "set|");
        assert_eq!(with(&m, "${a:unset}|${e:unset}").unwrap(), "|unset");
        assert_eq!(
            with(&m, "${a?{yes}:{no}} ${e?{yes}:{no}}").unwrap(),
            "yes no"
        );
        assert_eq!(with(&m, "cost $ 5 and $").unwrap(), "cost $ 5 and $");
    }

    #[test]
    fn errors() {
        assert_eq!(
            with(&[], "$nope"),
            Err(ExpandError::Undefined("nope".into()))
        );
        assert!(matches!(
            with(&[("a", "$b"), ("b", "$a")], "$a"),
            Err(ExpandError::Loop(_))
        ));
        assert!(matches!(with(&[], "${a"), Err(ExpandError::Syntax(_))));
    }

    #[test]
    fn finds_references() {
        assert_eq!(references("x $a ${b} $(c_d)"), vec!["a", "b", "c_d"]);
    }
}
