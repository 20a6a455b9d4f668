//! Typed parameter values: booleans, durations with units, sizes, lists.
use std::time::Duration;

/// Parses `yes`/`no` (and `true`/`false`), case-insensitively, as Postfix does.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err("expected yes or no".into()),
    }
}

pub fn parse_int(s: &str, min: i64, max: i64) -> Result<i64, String> {
    let v: i64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a whole number".to_string())?;
    if v < min {
        return Err(format!("must be at least {min}"));
    }
    if v > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(v)
}

/// Result of parsing a duration: the value, and whether the unit was implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedDuration {
    pub value: Duration,
    pub unit_implied: bool,
}

/// Parses a time such as `300s`, `250ms`, `5d`. A bare number takes the
/// parameter's default unit, as in Postfix.
pub fn parse_duration(s: &str, default_unit: &str) -> Result<ParsedDuration, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("expected a time like 300s (units: ms s m h d w)".into());
    }
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| "time value is too large".to_string())?;
    let (unit, implied) = match &s[digits..] {
        "" => (default_unit, true),
        u => (u, false),
    };
    let ms_per: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        other => {
            return Err(format!(
                "unknown time unit \"{other}\" (units: ms s m h d w)"
            ));
        }
    };
    let ms = n
        .checked_mul(ms_per)
        .filter(|&ms| ms <= 100 * 365 * 86_400_000)
        .ok_or_else(|| "time value is too large".to_string())?;
    Ok(ParsedDuration {
        value: Duration::from_millis(ms),
        unit_implied: implied,
    })
}

/// Parses a size in bytes. Postfix takes plain numbers; `k`, `m` and `g`
/// suffixes (powers of 1024) are accepted for convenience.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("expected a size in bytes".into());
    }
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| "size is too large".to_string())?;
    let mult: u64 = match s[digits..].to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        other => return Err(format!("unknown size suffix \"{other}\"")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size is too large".to_string())
}

/// Splits a list on whitespace and commas, keeping `{...}` groups whole
/// (inline tables such as `inline:{a=b, c=d}`).
pub fn split_list(s: &str) -> Vec<String> {
    split_braced(s, |c| c.is_whitespace() || c == ',').0
}

/// Splits `s` at the characters `sep` accepts outside `{...}` groups,
/// dropping empty pieces; the flag says whether the braces balanced.
pub fn split_braced(s: &str, sep: impl Fn(char) -> bool) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut balanced = true;
    for c in s.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                balanced &= depth > 0;
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if depth == 0 && sep(c) => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    (out, balanced && depth == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("250ms", "s").unwrap().value,
            Duration::from_millis(250)
        );
        let d = parse_duration("5", "d").unwrap();
        assert_eq!(d.value, Duration::from_secs(5 * 86400));
        assert!(d.unit_implied);
        assert!(parse_duration("5x", "s").is_err());
        assert!(parse_duration("", "s").is_err());
        assert!(parse_duration("s", "s").is_err());
        assert!(parse_duration("99999999999999999999", "s").is_err());
    }

    #[test]
    fn sizes_and_bools() {
        assert_eq!(parse_size("10240000").unwrap(), 10_240_000);
        assert_eq!(parse_size("10k").unwrap(), 10240);
        assert!(parse_size("-1").is_err());
        assert!(parse_bool("Yes").unwrap());
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn lists() {
        assert_eq!(split_list("a, b\tc,,d"), vec!["a", "b", "c", "d"]);
        assert_eq!(
            split_list("inline:{a=b, c=d}, x"),
            vec!["inline:{a=b, c=d}", "x"]
        );
    }
}
