//! Parsing and printing of the small languages inside compose values: Go durations, byte sizes,
//! CPU counts, shell words, and the "did you mean" distance.

use std::time::Duration;

/// Parses a Go duration (`1m30s`, `500ms`, `1.5h`, `0`). Negative durations are refused.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration (expected a number and a unit: 10s, 1m30s, 500ms, 1h)");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("{text:?} is negative: durations must be 0 or more"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
        let mut value = whole.checked_mul(nanos_per_unit).ok_or_else(invalid)?;
        let mut scale = nanos_per_unit;
        for digit in fraction.chars().take(30) {
            scale /= 10;
            value += u128::from(digit.to_digit(10).unwrap_or(0)) * scale;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, nanos))
}

/// Prints a duration as Go does (`1m30s`, `500ms`, `1h0m0s`), so output reads like docker's.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let seconds = decimal(u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()), 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / unit` with the fraction's trailing zeros dropped.
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a byte size as docker does (`512m`, `1.5G`, `2gb`, `1024`): units are powers of 1024.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a byte size (expected a number with an optional unit: 512m, 1g, 1024)");
    let lower = text.trim().to_ascii_lowercase();
    let mut s = lower.as_str();
    s = s.strip_suffix('b').unwrap_or(s);
    s = s.strip_suffix('i').unwrap_or(s);
    let shift = match s.chars().last() {
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        _ => 0,
    };
    if shift > 0 {
        s = &s[..s.len() - 1];
    }
    let s = s.trim_end();
    if s.is_empty()
        || !s.chars().all(|c| c.is_ascii_digit() || c == '.')
        || s.matches('.').count() > 1
        || s.starts_with('.')
    {
        return Err(invalid());
    }
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let whole: u128 = whole.parse().map_err(|_| invalid())?;
    let unit: u128 = 1 << shift;
    let mut value = whole.checked_mul(unit).ok_or_else(invalid)?;
    let mut scale = unit * 1_000_000_000;
    let mut fraction_nanos: u128 = 0;
    for digit in fraction.chars().take(9) {
        scale /= 10;
        fraction_nanos += u128::from(digit.to_digit(10).unwrap_or(0)) * scale;
    }
    value += fraction_nanos / 1_000_000_000;
    u64::try_from(value).map_err(|_| invalid())
}

/// Parses a CPU count (`0.5`, `2`, `.25`) into billionths of a CPU.
pub(crate) fn parse_nano_cpus(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a CPU count (expected a decimal number such as 0.5 or 2)");
    let s = text.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '.') || s.matches('.').count() > 1 || s == "." {
        return Err(invalid());
    }
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if fraction.len() > 9 && fraction[9..].chars().any(|c| c != '0') {
        return Err(format!("{text:?} is too precise: CPUs are counted in billionths"));
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
    let mut nanos = whole.checked_mul(1_000_000_000).ok_or_else(invalid)?;
    let mut scale = 1_000_000_000;
    for digit in fraction.chars().take(9) {
        scale /= 10;
        nanos += u64::from(digit.to_digit(10).unwrap_or(0)) * scale;
    }
    Ok(nanos)
}

/// Prints billionths of a CPU as a decimal (`0.5`).
pub(crate) fn format_nano_cpus(nanos: u64) -> String {
    decimal(u128::from(nanos), 1_000_000_000)
}

/// Splits a command line into words as a POSIX shell would, without expansions: quotes group,
/// backslashes escape, `#` at the start of a word begins a comment.
pub(crate) fn split_shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(next) => word.push(next),
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(next) => word.push(next),
                        None => return Err(format!("unclosed single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(next @ ('"' | '\\' | '$' | '`')) => word.push(next),
                            Some('\n') => {}
                            Some(next) => {
                                word.push('\\');
                                word.push(next);
                            }
                            None => return Err(format!("unclosed double quote in {text:?}")),
                        },
                        Some(next) => word.push(next),
                        None => return Err(format!("unclosed double quote in {text:?}")),
                    }
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word.to_ascii_lowercase(), c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("2us", Duration::from_micros(2)),
            ("3µs", Duration::from_micros(3)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("1h2m3s4ms", Duration::new(3723, 4_000_000)),
            (".5s", Duration::from_millis(500)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for text in ["10", "", "s", "-1s", "1x", "1..2s", "1s2", "99999999999999999999999h"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        let printed = [
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(15), "15ns"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in printed {
            assert_eq!(format_duration(d), want);
            assert_eq!(parse_duration(want), Ok(d), "round trip of {want}");
        }
    }

    #[test]
    fn byte_sizes() {
        let ok = [
            ("1024", 1024),
            ("512m", 512 << 20),
            ("512M", 512 << 20),
            ("1g", 1 << 30),
            ("2gb", 2 << 30),
            ("1GiB", 1 << 30),
            ("1.5k", 1536),
            ("100b", 100),
            ("64 mb", 64 << 20),
        ];
        for (text, want) in ok {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
        for text in ["", "m", "-1", "1x", "1.2.3m", ".5g", "99999999999p"] {
            assert!(parse_bytes(text).is_err(), "{text}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_nano_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_nano_cpus(".25"), Ok(250_000_000));
        assert_eq!(parse_nano_cpus("0.0000000001").map_err(|e| e.contains("too precise")), Err(true));
        assert!(parse_nano_cpus("-1").is_err());
        assert!(parse_nano_cpus("one").is_err());
        assert_eq!(format_nano_cpus(500_000_000), "0.5");
        assert_eq!(format_nano_cpus(2_000_000_000), "2");
        assert_eq!(format_nano_cpus(1), "0.000000001");
    }

    #[test]
    fn shell_words() {
        let cases: [(&str, &[&str]); 7] = [
            ("echo hello world", &["echo", "hello", "world"]),
            ("sh -c 'echo $HOME'", &["sh", "-c", "echo $HOME"]),
            (r#"say "a \"b\" c""#, &["say", r#"a "b" c"#]),
            (r"a\ b c", &["a b", "c"]),
            ("  spaced   out  ", &["spaced", "out"]),
            ("run # comment", &["run"]),
            ("''", &[""]),
        ];
        for (text, want) in cases {
            assert_eq!(split_shell_words(text), Ok(want.iter().map(|s| (*s).to_owned()).collect()), "{text}");
        }
        assert!(split_shell_words("echo 'unclosed").is_err());
        assert!(split_shell_words("echo \"unclosed").is_err());
    }

    #[test]
    fn suggestions() {
        let keys = ["image", "ports", "environment", "volumes", "deploy"];
        assert_eq!(closest("prots", keys), Some("ports"));
        assert_eq!(closest("enviroment", keys), Some("environment"));
        assert_eq!(closest("Image", keys), Some("image"));
        assert_eq!(closest("zzzzzz", keys), None);
    }
}
