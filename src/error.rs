//! Typed failures that decide the exit code. Everything else is exit 1.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | the operation failed (database, storage, tool error) |
//! | 2    | usage or configuration error (nothing was done) |
//! | 3    | verification failed: a backup is damaged or incomplete |
//! | 4    | another run holds the target's lock |
//! | 5    | the operator declined, or a confirmation was needed (`--yes`) |
//! | 6    | test-restore: a check failed (the backup did not restore, or restored wrong) |
//! | 7    | status: a target's newest backup is older than allowed (`--max-age`) |

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Fail {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Verify(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    NotConfirmed(String),
    #[error("{0}")]
    CheckFailed(String),
    #[error("{0}")]
    Stale(String),
}

impl Fail {
    pub fn exit_code(&self) -> u8 {
        match self {
            Fail::Usage(_) | Fail::Config(_) => 2,
            Fail::Verify(_) => 3,
            Fail::Locked(_) => 4,
            Fail::NotConfirmed(_) => 5,
            Fail::CheckFailed(_) => 6,
            Fail::Stale(_) => 7,
        }
    }
}

/// The exit code for an error chain: the first typed failure decides, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| {
            e.downcast_ref::<Fail>().or_else(|| {
                // A failure raised inside a reader travels as an io::Error, whose
                // `source()` skips the error it wraps.
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<Fail>())
            })
        })
        .map(Fail::exit_code)
        .unwrap_or(1)
}

/// A hint for known causes, printed after the error.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{err:#}");
    if text.contains("password authentication failed") || text.contains("no password supplied") {
        return Some("set PGPASSWORD, a ~/.pgpass entry, or password_file in the target's config");
    }
    if [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NotSignedUp",
        "InvalidToken",
        "ExpiredToken",
    ]
    .iter()
    .any(|c| text.contains(c))
    {
        return Some("check the S3 credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the storage's profile)");
    }
    if text.contains("NoSuchBucket") {
        return Some("create the bucket or fix `bucket` in the storage's config");
    }
    if text.contains("could not connect to server") || text.contains("Connection refused") {
        return Some("is the server running and reachable? check url/PGHOST/PGPORT");
    }
    None
}
