//! Logical lines of a table source file, as Postfix's readllines() makes
//! them: comment and blank lines are dropped, a line that starts with
//! whitespace continues the one before it (its text is appended as it
//! is), and trailing whitespace is trimmed.

/// One logical line and the number of its first physical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub text: String,
}

/// Splits `text` into logical lines. Text that continues nothing (the
/// first line starts with whitespace) is an error at its line.
pub fn logical(text: &str, file: &str) -> Result<Vec<Line>, Vec<String>> {
    let mut out: Vec<Line> = Vec::new();
    let mut errs = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.contains('\0') {
            errs.push(format!("{file}:{}: a NUL byte in the text", i + 1));
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            match out.last_mut() {
                Some(last) => last.text.push_str(raw),
                None => errs.push(format!(
                    "{file}:{}: a logical line must not start with whitespace",
                    i + 1
                )),
            }
            continue;
        }
        out.push(Line {
            number: i + 1,
            text: raw.to_string(),
        });
    }
    for l in &mut out {
        l.text.truncate(l.text.trim_end().len());
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// `IF`/`ENDIF` (any case) at the start of `line`, not followed by a
/// letter or digit: the rest of the line.
pub fn keyword<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let head = line.get(..word.len())?;
    let rest = &line[word.len()..];
    (head.eq_ignore_ascii_case(word) && !rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
        .then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_comments_and_blanks() {
        let t = "# c\n\n/a/ one\n  two\n# inside\n\tthree  \n/b/ x\n";
        let l = logical(t, "f").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].number, 3);
        assert_eq!(l[0].text, "/a/ one  two\tthree");
        assert_eq!(l[1].number, 7);
        assert!(logical("  lead\n", "f").unwrap_err()[0].starts_with("f:1:"));
    }
}
