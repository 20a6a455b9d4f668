//! `regexp:` (regexp_table(5), POSIX extended syntax) and `pcre:`
//! (pcre_table(5)) tables, matched with the `regex` crate, whose matching
//! time is linear in the key whatever the pattern.
//!
//! Each pattern is translated to the crate's syntax. What the crate cannot
//! do the way Postfix's library does is refused with file:line, never
//! matched differently: backreferences and lookaround (the crate's own
//! errors), POSIX basic syntax (`x` turned off), collating elements, the
//! pcre `X` flag, escapes that mean something else in POSIX (`\d` is a
//! plain `d` to glibc), and in a `regexp:` table a `$number` substitution
//! together with `|`, where POSIX leftmost-longest and the crate's
//! leftmost-first matching can capture different text.
//!
//! Matching is on bytes, with ASCII classes and ASCII case folding, as
//! Postfix's libraries do in the C locale.
use regex::bytes::{Regex, RegexBuilder};

use super::lines::{self, keyword};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// POSIX extended regular expressions (`regexp:`).
    Posix,
    /// Perl-compatible (`pcre:`).
    Pcre,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Posix => "regexp",
            Dialect::Pcre => "pcre",
        }
    }
}

/// Compiled size bound per pattern: a table cannot make a daemon allocate
/// without limit.
const SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
struct Pattern {
    re: Regex,
    want: bool,
}

impl Pattern {
    fn test(&self, key: &[u8]) -> bool {
        self.re.is_match(key) == self.want
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
}

#[derive(Debug, Clone)]
enum Rule {
    Match {
        first: Pattern,
        second: Option<Pattern>,
        value: Vec<Piece>,
        groups: bool,
    },
    If {
        pat: Pattern,
        end: usize,
    },
    EndIf,
}

/// A parsed regexp or pcre table.
#[derive(Debug, Clone)]
pub struct RegexTable {
    rules: Vec<Rule>,
}

/// Splits `!/pattern/flags rest` into (want, pattern, flags, rest).
fn split_pattern(s: &str) -> Result<(bool, &str, &str, &str), String> {
    let mut want = true;
    let mut s = s;
    loop {
        s = s.trim_start();
        match s.strip_prefix('!') {
            Some(r) => {
                want = !want;
                s = r;
            }
            None => break,
        }
    }
    let delim = s.chars().next().ok_or("no regexp")?;
    if delim.is_ascii_alphanumeric() || delim.is_whitespace() {
        return Err(format!("bad regexp delimiter \"{delim}\""));
    }
    let body = &s[delim.len_utf8()..];
    let mut end = None;
    let mut it = body.char_indices();
    while let Some((i, c)) = it.next() {
        if c == '\\' {
            if it.next().is_none() {
                break;
            }
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let end = end.ok_or_else(|| format!("no closing regexp delimiter \"{delim}\""))?;
    let pattern = &body[..end];
    let after = &body[end + delim.len_utf8()..];
    let flags_len = after
        .find(|c: char| c.is_whitespace() || c == '!')
        .unwrap_or(after.len());
    Ok((want, pattern, &after[..flags_len], &after[flags_len..]))
}

struct Flags {
    icase: bool,
    multiline: bool,
    dotall: bool,
    extended: bool,
    anchored: bool,
    ungreedy: bool,
}

fn flags(d: Dialect, text: &str) -> Result<Flags, String> {
    let mut f = Flags {
        icase: true,
        multiline: false,
        dotall: d == Dialect::Pcre,
        extended: d == Dialect::Posix,
        anchored: false,
        ungreedy: false,
    };
    for c in text.chars() {
        match (d, c) {
            (_, 'i') => f.icase = !f.icase,
            (_, 'm') => f.multiline = !f.multiline,
            (_, 'x') => f.extended = !f.extended,
            (Dialect::Pcre, 's') => f.dotall = !f.dotall,
            (Dialect::Pcre, 'A') => f.anchored = !f.anchored,
            (Dialect::Pcre, 'E') => {} // `$` matches only at the end here anyway
            (Dialect::Pcre, 'U') => f.ungreedy = !f.ungreedy,
            (Dialect::Pcre, 'X') => {
                return Err("the pcre X flag is not supported (nor by PCRE2)".into());
            }
            _ => return Err(format!("unknown {} option \"{c}\"", d.name())),
        }
    }
    if d == Dialect::Posix && !f.extended {
        return Err("POSIX basic regular expression syntax (the x flag turned off) is not supported; write the pattern in extended syntax".into());
    }
    Ok(f)
}

/// Translates a bracket expression starting after its `[`; returns the
/// translated text and the rest of the pattern after its `]`.
fn bracket(d: Dialect, s: &str, no_newline: bool) -> Result<(String, &str), String> {
    let mut out = String::from("[");
    let mut rest = s;
    let negated = rest.starts_with('^');
    if negated {
        out.push('^');
        rest = &rest[1..];
    }
    let mut first = true;
    loop {
        let c = rest.chars().next().ok_or("unmatched [ in the pattern")?;
        if c == ']' && !first {
            rest = &rest[1..];
            break;
        }
        let last = rest[c.len_utf8()..].starts_with(']');
        match c {
            '[' => match rest.as_bytes().get(1) {
                Some(b':') => {
                    let end = rest[2..]
                        .find(":]")
                        .ok_or("unterminated [: character class")?;
                    out.push_str(&rest[..end + 4]);
                    rest = &rest[end + 4..];
                    first = false;
                    continue;
                }
                Some(b'.' | b'=') => {
                    return Err("collating elements ([. .] and [= =]) are not supported".into());
                }
                _ => out.push_str("\\["),
            },
            '\\' if d == Dialect::Posix => out.push_str("\\\\"),
            '\\' => {
                let mut it = rest.chars();
                it.next();
                let n = it.next().ok_or("trailing backslash in the pattern")?;
                out.push('\\');
                out.push(n);
                rest = &rest[1 + n.len_utf8()..];
                first = false;
                continue;
            }
            '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '-' if first || last => out.push_str("\\-"),
            ']' => out.push_str("\\]"),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
        first = false;
    }
    if negated && no_newline {
        out.push_str("\\n");
    }
    out.push(']');
    Ok((out, rest))
}

/// The pattern in the `regex` crate's syntax.
fn translate(d: Dialect, pattern: &str, f: &Flags) -> Result<String, String> {
    let mut out = String::new();
    out.push_str("(?");
    if f.icase {
        out.push('i');
    }
    if f.multiline {
        out.push('m');
    }
    let dotall = match d {
        Dialect::Posix => !f.multiline,
        Dialect::Pcre => f.dotall,
    };
    if dotall {
        out.push('s');
    }
    if f.ungreedy {
        out.push('U');
    }
    if d == Dialect::Pcre && f.extended {
        out.push('x');
    }
    out.push(')');
    if f.anchored {
        out.push_str("\\A(?:");
    }
    let no_newline = d == Dialect::Posix && f.multiline;
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '\\' => {
                let n = rest
                    .chars()
                    .next()
                    .ok_or("trailing backslash in the pattern")?;
                rest = &rest[n.len_utf8()..];
                match (d, n) {
                    (_, n) if n.is_ascii_digit() => {
                        return Err("backreferences are not supported".into());
                    }
                    (Dialect::Posix, 'w' | 'W' | 's' | 'S' | 'b' | 'B' | '<' | '>') => {
                        out.push('\\');
                        out.push(n);
                    }
                    (Dialect::Posix, '`') => out.push_str("\\A"),
                    (Dialect::Posix, '\'') => out.push_str("\\z"),
                    (Dialect::Posix, n) if n.is_ascii_alphabetic() => {
                        return Err(format!(
                            "\\{n} is not a POSIX escape (glibc reads it as a plain \"{n}\"); write what you mean"
                        ));
                    }
                    (Dialect::Pcre, '<' | '>') => out.push(n),
                    (_, n) if n.is_ascii() && !n.is_ascii_alphanumeric() => {
                        out.push('\\');
                        out.push(n);
                    }
                    (Dialect::Posix, n) => out.push(n),
                    (Dialect::Pcre, n) => {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            '[' => {
                let (b, r) = bracket(d, rest, no_newline)?;
                out.push_str(&b);
                rest = r;
            }
            c => out.push(c),
        }
    }
    if f.anchored {
        out.push(')');
    }
    Ok(out)
}

fn compile(d: Dialect, pattern: &str, flag_text: &str) -> Result<Regex, String> {
    let f = flags(d, flag_text)?;
    let text = translate(d, pattern, &f)?;
    RegexBuilder::new(&text)
        .unicode(false)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) => format!(
                "/{pattern}/: {}",
                s.lines()
                    .rfind(|l| l.starts_with("error:"))
                    .unwrap_or(&s)
                    .trim_start_matches("error: ")
            ),
            regex::Error::CompiledTooBig(n) => {
                format!("/{pattern}/: the compiled pattern exceeds {n} bytes")
            }
            other => format!("/{pattern}/: {other}"),
        })
}

/// The replacement text: `$1`, `${1}`, `$(1)`, and `$$` for a dollar.
fn replacement(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, after) = match rest.chars().next() {
            Some('$') => {
                lit.push('$');
                rest = &rest[1..];
                continue;
            }
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                let end = rest
                    .find(close)
                    .ok_or_else(|| format!("missing '{close}' in the result"))?;
                (&rest[1..end], &rest[end + 1..])
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
            _ => return Err("a '$' in the result must be $number or $$".into()),
        };
        if !name.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
            return Err(format!("non-numeric replacement index \"{name}\""));
        }
        let n: usize = name
            .parse()
            .map_err(|_| format!("out-of-range replacement index \"{name}\""))?;
        if n < 1 {
            return Err(format!("out-of-range replacement index \"{name}\""));
        }
        if !lit.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut lit)));
        }
        out.push(Piece::Group(n));
        rest = after;
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Text(lit));
    }
    Ok(out)
}

impl RegexTable {
    pub fn parse(d: Dialect, text: &str, file: &str) -> Result<RegexTable, Vec<String>> {
        let mut rules = Vec::new();
        let mut errs = Vec::new();
        let mut open: Vec<(usize, usize)> = Vec::new();
        for line in lines::logical(text, file)? {
            match Self::rule(d, &line.text, &mut rules, &mut open, line.number) {
                Ok(()) => {}
                Err(e) => errs.push(format!("{file}:{}: {e}", line.number)),
            }
        }
        for (_, n) in open {
            errs.push(format!("{file}:{n}: IF has no matching ENDIF"));
        }
        if errs.is_empty() {
            Ok(RegexTable { rules })
        } else {
            Err(errs)
        }
    }

    fn rule(
        d: Dialect,
        t: &str,
        rules: &mut Vec<Rule>,
        open: &mut Vec<(usize, usize)>,
        number: usize,
    ) -> Result<(), String> {
        if !t.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            let (want, pattern, flag_text, rest) = split_pattern(t)?;
            let first = Pattern {
                re: compile(d, pattern, flag_text)?,
                want,
            };
            let (second, rest) = if rest.starts_with('!') {
                let (w2, p2, f2, r2) = split_pattern(rest)?;
                (
                    Some(Pattern {
                        re: compile(d, p2, f2)?,
                        want: w2,
                    }),
                    r2,
                )
            } else {
                (None, rest)
            };
            let value_text = rest.trim();
            if value_text.is_empty() {
                return Err("no replacement text".into());
            }
            let value = replacement(value_text)?;
            let max = value
                .iter()
                .filter_map(|p| match p {
                    Piece::Group(n) => Some(*n),
                    Piece::Text(_) => None,
                })
                .max()
                .unwrap_or(0);
            if max > 0 && !want {
                return Err("$number found in negative match replacement text".into());
            }
            if max > first.re.captures_len() - 1 {
                return Err(format!("out of range replacement index \"{max}\""));
            }
            if max > 0 && d == Dialect::Posix && pattern.contains('|') {
                return Err("a $number substitution from a pattern with '|' is not supported: POSIX leftmost-longest matching may capture other text than this engine; use a pcre: table or split the rule".into());
            }
            rules.push(Rule::Match {
                first,
                second,
                value,
                groups: max > 0,
            });
            Ok(())
        } else if let Some(rest) = keyword(t, "if") {
            let (want, pattern, flag_text, rest) = split_pattern(rest)?;
            if !rest.trim().is_empty() {
                return Err(format!(
                    "extra text after IF statement: \"{}\"",
                    rest.trim()
                ));
            }
            let pat = Pattern {
                re: compile(d, pattern, flag_text)?,
                want,
            };
            open.push((rules.len(), number));
            rules.push(Rule::If { pat, end: 0 });
            Ok(())
        } else if let Some(rest) = keyword(t, "endif") {
            if !rest.trim().is_empty() {
                return Err(format!("extra text after ENDIF: \"{}\"", rest.trim()));
            }
            let (i, _) = open.pop().ok_or("ENDIF without IF")?;
            rules.push(Rule::EndIf);
            let end = rules.len();
            if let Rule::If { end: e, .. } = &mut rules[i] {
                *e = end;
            }
            Ok(())
        } else {
            Err(format!(
                "unknown directive or bad regexp delimiter: \"{t}\""
            ))
        }
    }

    /// The result of the first rule that matches `key`, substituted.
    pub fn lookup(&self, key: &str) -> Option<String> {
        let k = key.as_bytes();
        let mut i = 0;
        while let Some(r) = self.rules.get(i) {
            i += 1;
            match r {
                Rule::Match {
                    first,
                    second,
                    value,
                    groups,
                } => {
                    if !first.test(k) || second.as_ref().is_some_and(|s| !s.test(k)) {
                        continue;
                    }
                    if !groups {
                        return Some(
                            value
                                .iter()
                                .map(|p| match p {
                                    Piece::Text(t) => t.as_str(),
                                    Piece::Group(_) => "",
                                })
                                .collect(),
                        );
                    }
                    let caps = first.re.captures(k)?;
                    let mut out = Vec::new();
                    for p in value {
                        match p {
                            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                            Piece::Group(n) => {
                                if let Some(m) = caps.get(*n) {
                                    out.extend_from_slice(m.as_bytes());
                                }
                            }
                        }
                    }
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                Rule::If { pat, end } => {
                    if !pat.test(k) {
                        i = *end;
                    }
                }
                Rule::EndIf => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posix(t: &str) -> RegexTable {
        RegexTable::parse(Dialect::Posix, t, "t").unwrap()
    }

    #[test]
    fn regexp_manual_page_example() {
        let t = posix(
            "# Disallow sender-specified routing.\n/[%!@].*[%!@]/ 550 Sender-specified routing rejected\n\
             /^postmaster@/ OK\nif !/^owner-/\n/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead\nendif\n",
        );
        assert_eq!(
            t.lookup("a@b@c").as_deref(),
            Some("550 Sender-specified routing rejected")
        );
        assert_eq!(t.lookup("Postmaster@example.com").as_deref(), Some("OK"));
        assert_eq!(
            t.lookup("list-outgoing@example.com").as_deref(),
            Some("550 Use list@example.com instead")
        );
        assert_eq!(t.lookup("owner-list-outgoing@example.com"), None);
        assert_eq!(t.lookup("user@example.com"), None);
    }

    #[test]
    fn pcre_manual_page_example() {
        let t = RegexTable::parse(
            Dialect::Pcre,
            "/^(.*)-outgoing@(.*)/ 550 Use ${1}@${2} instead\n/^(friend@(my\\.domain$).*)$/  550 Stick this in your pipe $1\n\
             /^noddy@my\\.domain$/\n 550 This user is a funny one.\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            t.lookup("a-outgoing@b").as_deref(),
            Some("550 Use a@b instead")
        );
        assert_eq!(
            t.lookup("noddy@my.domain").as_deref(),
            Some("550 This user is a funny one.")
        );
        // The manual's own lookahead example is refused, with the line.
        let e = RegexTable::parse(
            Dialect::Pcre,
            "/^(?!owner-)(.*)-outgoing@(.*)/ 550 x\n",
            "t",
        )
        .unwrap_err();
        assert!(e[0].starts_with("t:1: "), "{e:?}");
        assert!(e[0].contains("look-around"), "{e:?}");
    }

    #[test]
    fn flags_and_case() {
        let t = posix("/^ABC$/i exact\n/^abc$/ folded\n");
        assert_eq!(t.lookup("ABC").as_deref(), Some("exact"));
        assert_eq!(t.lookup("aBc").as_deref(), Some("folded"));
        assert!(RegexTable::parse(Dialect::Posix, "/a/x basic\n", "t").is_err());
        assert!(RegexTable::parse(Dialect::Posix, "/a/s x\n", "t").is_err());
        assert!(RegexTable::parse(Dialect::Pcre, "/a/X x\n", "t").is_err());
        let p = RegexTable::parse(Dialect::Pcre, "/b/A anchored\n/a b/x ext\n", "t").unwrap();
        assert_eq!(p.lookup("a b"), None);
        assert_eq!(p.lookup("cab").as_deref(), Some("ext"));
        assert_eq!(p.lookup("bc").as_deref(), Some("anchored"));
    }

    #[test]
    fn posix_escapes_and_brackets() {
        // \d is a plain d in POSIX: refused rather than matched as a digit.
        assert!(RegexTable::parse(Dialect::Posix, "/\\d/ x\n", "t").is_err());
        assert!(RegexTable::parse(Dialect::Posix, "/(a)\\1/ x\n", "t").is_err());
        // A backslash inside brackets is literal in POSIX.
        let t = posix("/^[\\.]$/ hit\n/^[a[]$/ open\n/^[[:digit:]]+$/ num\n");
        assert_eq!(t.lookup("\\").as_deref(), Some("hit"));
        assert_eq!(t.lookup(".").as_deref(), Some("hit"));
        assert_eq!(t.lookup("[").as_deref(), Some("open"));
        assert_eq!(t.lookup("123").as_deref(), Some("num"));
    }

    #[test]
    fn substitution_rules() {
        assert!(RegexTable::parse(Dialect::Posix, "/(a)/ $2\n", "t").is_err());
        assert!(RegexTable::parse(Dialect::Posix, "!/(a)/ $1\n", "t").is_err());
        assert!(RegexTable::parse(Dialect::Posix, "/(a|b)/ $1\n", "t").is_err());
        assert!(RegexTable::parse(Dialect::Posix, "/(a)/ $x\n", "t").is_err());
        let t = posix("/^(a)(b)?c/ [$1][$(2)]$$\n");
        assert_eq!(t.lookup("ac").as_deref(), Some("[a][]$"));
        assert_eq!(t.lookup("abc").as_deref(), Some("[a][b]$"));
    }

    #[test]
    fn hostile_key_is_linear() {
        let t = RegexTable::parse(Dialect::Pcre, "/^(a+)+$/ x\n/(x+x+)+y/ y\n", "t").unwrap();
        // Backtracking engines take exponential time here; this one
        // answers (bench/ measures how fast).
        let key = "a".repeat(100_000) + "!";
        assert_eq!(t.lookup(&key), None);
    }
}
