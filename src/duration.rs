//! Durations as operators write them: `90s`, `30m`, `26h`, `7d`, `2w`, `6mo`, `1y`, `1y6mo`.
//! A month is 30 days and a year 365 days for `keep_within`-style windows.

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. 30d, 26h, 1y".into());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("`{s}` is not a duration; write e.g. 30d, 26h, 1y"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let secs = match unit {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "mo" => 30 * 86_400,
            "y" => 365 * 86_400,
            "" => return Err(format!("`{s}` needs a unit (s, m, h, d, w, mo, y)")),
            other => {
                return Err(format!(
                    "`{s}`: unknown unit `{other}` (use s, m, h, d, w, mo, y)"
                ))
            }
        };
        total = total
            .checked_add(n.checked_mul(secs).ok_or("duration too large")?)
            .ok_or("duration too large")?;
    }
    Ok(Duration::from_secs(total))
}

pub fn chrono(s: &str) -> Result<chrono::Duration, String> {
    let d = parse(s)?;
    chrono::Duration::from_std(d).map_err(|e| e.to_string())
}

/// `1h 2m 3s`-style rendering for people.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 {
        format!("{}d{}h", s / 86_400, (s % 86_400) / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A duration as the config spells it, in its largest whole unit: `26h`, `90m`, `1s`.
pub fn spec(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// A size as the config spells it: `4GiB`, `512MiB`, `100MB`, `1048576` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 4GiB, 512MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(format!("`{s}` is not a size (e.g. 4GiB, 512MiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("4 gigs").is_err());
        assert!(parse_bytes("GiB").is_err());
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(
            parse("1y6mo").unwrap().as_secs(),
            365 * 86_400 + 180 * 86_400
        );
        assert_eq!(parse("26h").unwrap().as_secs(), 26 * 3600);
        assert!(parse("5").is_err());
        assert!(parse("5 parsecs").is_err());
    }
}
