//! The parsers of `backup` that read bytes an attacker or a broken disk could shape,
//! compiled from the main crate's own source files with `#[path]`: the fuzz build then
//! needs none of the S3, tokio or database-client stack, which under the sanitizers
//! would take most of the CI budget to build. Module paths mirror the main crate's
//! (`crate::config`, `crate::db::postgres::tar`...) so the included files compile
//! unchanged; what they reach beyond the parsers is shimmed below, and says so.
#![allow(dead_code, unused_imports, clippy::all)]

#[path = "../../src/compress.rs"]
pub mod compress;
#[path = "../../src/config/mod.rs"]
pub mod config;
#[path = "../../src/duration.rs"]
pub mod duration;
#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/manifest.rs"]
pub mod manifest;
#[path = "../../src/redact.rs"]
pub mod redact;

#[path = "../../src/db/clickhouse/native.rs"]
#[doc(hidden)]
pub mod clickhouse_native;
#[path = "../../src/engine/retention.rs"]
#[doc(hidden)]
pub mod engine_retention;
#[path = "../../src/db/mongodb/archive.rs"]
#[doc(hidden)]
pub mod mongodb_archive;
#[path = "../../src/db/postgres/tar.rs"]
#[doc(hidden)]
pub mod postgres_tar;
#[path = "../../src/db/postgres/walname.rs"]
#[doc(hidden)]
pub mod postgres_walname;
#[path = "../../src/db/recovery.rs"]
#[doc(hidden)]
pub mod recovery_mod;
#[path = "../../src/db/redis/rdb.rs"]
#[doc(hidden)]
pub mod redis_rdb;

pub mod db {
    pub use super::recovery_mod as recovery;
    pub mod clickhouse {
        pub use crate::clickhouse_native as native;
    }
    pub mod mongodb {
        pub use crate::mongodb_archive as archive;
    }
    pub mod postgres {
        pub use crate::postgres_tar as tar;
        pub use crate::postgres_walname as walname;
    }
    pub mod redis {
        pub use crate::redis_rdb as rdb;
    }
}

pub mod engine {
    pub use super::engine_retention as retention;
    /// Shim: no signal handler runs in a fuzz target.
    pub mod cleanup {
        pub fn terminating() -> bool {
            false
        }
    }
}

/// Shims for the storage layer, the parts `manifest.rs` and `config/` name.
pub mod storage {
    use std::collections::BTreeMap;

    /// As `src/storage/mod.rs` defines it (the manifest carries it, so its serde
    /// shape matters here).
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct StoredDigest {
        pub size_bytes: u64,
        pub sha256: String,
    }

    #[derive(Debug, Clone, Default)]
    pub struct PutMeta {
        pub tags: BTreeMap<String, String>,
        pub metadata: BTreeMap<String, String>,
    }

    pub trait Storage {
        fn sealed_to(&self) -> Option<Vec<String>>;
        fn stored_digest(&self, key: &str) -> Option<StoredDigest>;
    }

    /// Shim: age recipients are parsed by the `age` crate (fuzzed upstream), which would
    /// bring its whole stack into this build; every configuration's recipients pass.
    pub mod seal {
        pub fn recipients(
            _cfg: &crate::config::EncryptionConfig,
        ) -> Result<Vec<String>, (String, String)> {
            Ok(Vec::new())
        }
    }
}

/// A fresh empty folder for one unpacking, removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var_os("BACKUP_FUZZ_SCRATCH")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!(
            "backup-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("creating a scratch folder");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
