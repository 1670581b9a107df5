//! Secrets never reach logs, manifests, process lists or errors.

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
    fn hides_passwords() {
        assert_eq!(
            super::url("postgresql://u:s3cret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert!(!super::url("postgresql://u@h/db?password=x").contains("=x"));
        assert_eq!(super::url("postgresql://u@h/db"), "postgresql://u@h/db");
    }
}
