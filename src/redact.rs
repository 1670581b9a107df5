//! Secrets never reach logs, manifests, process lists or errors.

/// The password in `password_file`: its first line (a trailing newline or CRLF is not
/// part of it). The error names the file, never its content.
pub fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading password_file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// A serde message without the offending value: `invalid type: string "s3cr3t",
/// expected a sequence` becomes `invalid type: a string, expected a sequence`, since a
/// misplaced value may be a secret.
pub fn serde_message(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 8..];
        match after.find("\", expected").or_else(|| after.rfind('"')) {
            Some(end) => {
                out.push_str("a string");
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the password of a URL with `***` (works on unparsable input too).
pub fn url(s: &str) -> String {
    if let Ok(mut u) = url::Url::parse(s) {
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        }
        // Query parameters that carry secrets.
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = matches!(
                    k.to_ascii_lowercase().as_str(),
                    "password" | "sslpassword" | "token" | "secret" | "key" | "sig" | "signature"
                );
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        if !pairs.is_empty() {
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return u.to_string();
    }
    // Fallback: scheme://user:secret@host
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        if let Some(at) = rest.find('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:***{}",
                    &s[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
    }
    s.to_string()
}

/// A URL whose path or query may be the secret (Slack and other webhooks): only the
/// scheme and host are kept.
pub fn secret_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(u) => match u.host_str() {
            Some(h) => match u.port() {
                Some(p) => format!("{}://{h}:{p}/***", u.scheme()),
                None => format!("{}://{h}/***", u.scheme()),
            },
            None => "***".into(),
        },
        Err(_) => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hides_webhook_paths() {
        assert_eq!(
            super::secret_url("https://hooks.slack.com/services/T0/B0/XyZ?x=1"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(super::secret_url("not a url"), "***");
    }

    #[test]
    fn serde_messages_lose_the_value() {
        assert_eq!(
            super::serde_message(r#"invalid type: string "p@ss, word", expected a sequence"#),
            "invalid type: a string, expected a sequence"
        );
        assert_eq!(
            super::serde_message("unknown variant `tar`, expected `plain` or `custom`"),
            "unknown variant `tar`, expected `plain` or `custom`"
        );
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(
            super::url("postgresql://u:s3cret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert!(!super::url("postgresql://u@h/db?password=x").contains("=x"));
        assert_eq!(super::url("postgresql://u@h/db"), "postgresql://u@h/db");
    }
}
