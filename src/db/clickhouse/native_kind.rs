//! `kind = "native"`: the server backs itself up with `BACKUP DATABASE ... TO S3(...)`
//! into the backup's own folder on the target's first S3 storage
//! (`<prefix>/<target>/<id>/native/<db>/`), so `prune` removes it with the folder.
//! This tool stores the DDL beside it (verified like any artifact), records the
//! statements (credentials redacted) and the row counts in the manifest, and restores
//! with `RESTORE ... FROM S3(...)`. Servers older than 22.8 are refused first.
//!
//! NOT TESTED AGAINST A REAL SERVER: no ClickHouse 22.8+ runs where this tool is
//! tested. The SQL and the version gate are unit-tested (server_backup.rs) and the
//! refusal of a real 18.16 server is an integration test; the rest is untried.

use super::logical::{objects, select, Logical};
use super::schema::{safe, Object};
use super::server_backup::{self, S3Dest, What};
use crate::config::StorageConfig;
use crate::db::{
    ArtifactSpec, DumpStream, EngineInfo, LogicalEngine, RestoreOptions, StreamSetEngine, Target,
};
use crate::error::Fail;
use crate::manifest::{DatabaseFacts, Kind, Manifest, TableFact};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest format of native backups.
pub const FORMAT: &str = "clickhouse-backup-sql";

pub struct NativeKind {
    logical: Logical,
    /// `https://host/bucket/prefix/` of the target's first S3 storage, with the
    /// credentials from the environment (None: the target has no S3 storage).
    base: Option<S3Dest>,
    target: String,
    id: Option<String>,
    shown: Vec<String>,
    restored: Vec<(Object, String)>,
}

/// The first S3 storage of the target, as ClickHouse's `S3()` wants it.
fn base(t: &Target) -> Option<S3Dest> {
    t.cfg
        .storages
        .iter()
        .find_map(|n| match t.config.storages.get(n) {
            Some(StorageConfig::S3(s3)) => {
                let endpoint = s3.endpoint.clone().unwrap_or_else(|| {
                    format!(
                        "https://s3.{}.amazonaws.com",
                        s3.region.as_deref().unwrap_or("us-east-1")
                    )
                });
                let prefix = s3.prefix.as_deref().unwrap_or("").trim_matches('/');
                let mut url = format!("{}/{}/", endpoint.trim_end_matches('/'), s3.bucket);
                if !prefix.is_empty() {
                    url.push_str(prefix);
                    url.push('/');
                }
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                Some(S3Dest {
                    url,
                    key_id: env("AWS_ACCESS_KEY_ID"),
                    secret: env("AWS_SECRET_ACCESS_KEY"),
                })
            }
            _ => None,
        })
}

impl NativeKind {
    pub fn new(logical: Logical, t: &Target) -> NativeKind {
        NativeKind {
            logical,
            base: base(t),
            target: t.name.to_string(),
            id: None,
            shown: vec![],
            restored: vec![],
        }
    }

    /// Where the server writes (or reads) database `db` of backup `id`.
    fn dest(&self, id: &str, db: &str) -> Result<S3Dest> {
        let b = self.base.clone().ok_or_else(|| {
            Fail::Usage(format!(
                "target `{}`: kind = \"native\" needs an S3 storage among its storages (the ClickHouse server writes the backup there itself)",
                self.target
            ))
        })?;
        Ok(S3Dest {
            url: format!("{}{}/{id}/native/{}/", b.url, self.target, safe(db)),
            ..b
        })
    }
}

impl LogicalEngine for NativeKind {
    fn artifact(&self) -> ArtifactSpec {
        ArtifactSpec {
            name: "native".into(),
            gzip: false,
            content: "DDL per table; the data written by the server's BACKUP ... TO S3".into(),
            format: FORMAT.into(),
        }
    }

    fn precheck(&mut self) -> Result<EngineInfo> {
        let c = self.logical.client();
        let version = c.text("SELECT version()")?.trim().to_string();
        server_backup::gate(&version, &c.display())?;
        self.dest("check", "check")?;
        let info = self.logical.precheck()?;
        // The server stores the data; this tool stores the DDL.
        for o in self.logical.objects_mut().into_iter().flatten() {
            o.data = None;
        }
        Ok(info)
    }

    fn start_dump(&mut self) -> Result<Box<dyn DumpStream>> {
        bail!("a ClickHouse native backup is written by the server")
    }

    fn check_artifact(&self, a: &mut dyn Read, expected: &DatabaseFacts) -> Result<String> {
        self.logical.check_artifact(a, expected)
    }

    fn check_named(
        &self,
        name: &str,
        a: &mut dyn Read,
        expected: &DatabaseFacts,
    ) -> Result<String> {
        self.logical.check_named(name, a, expected)
    }

    fn restore_precheck(&mut self, opts: &RestoreOptions, format: &str) -> Result<String> {
        let c = self.logical.client();
        let version = c.text("SELECT version()")?.trim().to_string();
        server_backup::gate(&version, &c.display())?;
        self.logical.restore_precheck(opts, format)
    }

    fn restore_plan(&self, opts: &RestoreOptions, _format: &str, database: &str) -> String {
        format!(
            "on {}: {}RESTORE each database (or --table) FROM S3 into {database}",
            self.logical.client().display(),
            if opts.clean {
                "drop the restored tables, "
            } else {
                ""
            }
        )
    }

    fn restore(
        &mut self,
        _file: &Path,
        _compression: crate::compress::Compression,
        _opts: &RestoreOptions,
    ) -> Result<()> {
        bail!("a ClickHouse native backup is restored by the server")
    }

    fn count_rows(&mut self, _opts: &RestoreOptions) -> Result<Vec<TableFact>> {
        self.restored
            .iter()
            .map(|(o, d)| {
                Ok(TableFact {
                    schema: o.database.clone(),
                    name: o.name.clone(),
                    rows: Some(self.logical.count(d, &o.name)?),
                })
            })
            .collect()
    }

    fn compares(&self, _opts: &RestoreOptions, t: &TableFact) -> bool {
        self.restored
            .iter()
            .any(|(o, _)| o.database == t.schema && o.name == t.name)
    }
}

fn has_rows(o: &Object) -> bool {
    matches!(o.kind.as_str(), "table" | "inner")
}

impl StreamSetEngine for NativeKind {
    fn as_logical(&mut self) -> &mut dyn LogicalEngine {
        self
    }

    fn streams(&mut self) -> Result<Vec<ArtifactSpec>> {
        self.logical.streams()
    }

    fn begin(&mut self, id: &str) {
        self.id = Some(id.to_string());
    }

    fn open_stream(&mut self, name: &str) -> Result<Box<dyn DumpStream>> {
        self.logical.open_stream(name)
    }

    fn facts(&mut self, per_stream: Vec<DatabaseFacts>) -> Result<DatabaseFacts> {
        let id = self.id.clone().ok_or_else(|| anyhow!("no backup id"))?;
        let mut f = self.logical.facts(per_stream)?;
        let dbs: Vec<String> = serde_json::from_value(f.extra["databases"].clone())?;
        let objs: Vec<Object> = serde_json::from_value(f.extra["clickhouse"].clone())?;
        for db in &dbs {
            let st = server_backup::backup(&What::Database(db), &self.dest(&id, db)?);
            self.logical
                .client()
                .exec(&st.sql)
                .with_context(|| st.shown.clone())?;
            self.shown.push(st.shown);
        }
        // Counted after the server's backup finished: writes in between would show.
        for o in objs.iter().filter(|o| has_rows(o)) {
            f.tables.push(TableFact {
                schema: o.database.clone(),
                name: o.name.clone(),
                rows: Some(self.logical.count(&o.database, &o.name)?),
            });
        }
        f.extra.insert(
            "clickhouse_native".into(),
            serde_json::json!({ "statements": self.shown }),
        );
        Ok(f)
    }

    fn kind(&self) -> Kind {
        Kind::Physical
    }

    fn needed(&self, m: &Manifest, opts: &RestoreOptions) -> Result<Vec<String>> {
        self.logical.needed(m, opts)
    }

    fn restore_set(
        &mut self,
        m: &Manifest,
        _files: &[(String, PathBuf)],
        opts: &RestoreOptions,
    ) -> Result<()> {
        let objs = objects(m)?;
        let sel = select(m, &objs, opts)?;
        self.restored.clear();
        let mut dbs: Vec<&str> = sel.iter().map(|o| o.database.as_str()).collect();
        dbs.dedup();
        for db in dbs {
            let to = self.logical.dest(opts, db);
            let src = self.dest(&m.id, db)?;
            let mine: Vec<&Object> = sel.iter().filter(|o| o.database == db).collect();
            if opts.clean {
                for o in mine.iter().rev().filter(|o| o.kind != "inner") {
                    self.logical
                        .client()
                        .exec(&format!("DROP TABLE IF EXISTS {}", o.quoted(&to)))?;
                }
            }
            let stmts = if opts.tables.is_empty() {
                vec![server_backup::restore(&What::Database(db), Some(&to), &src)]
            } else {
                mine.iter()
                    .filter(|o| o.kind != "inner")
                    .map(|o| server_backup::restore(&What::Table(db, &o.name), Some(&to), &src))
                    .collect()
            };
            for st in stmts {
                self.logical
                    .client()
                    .exec(&st.sql)
                    .with_context(|| st.shown.clone())?;
            }
            for o in mine.into_iter().filter(|o| has_rows(o)) {
                self.restored.push((o.clone(), to.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_server_writes_into_the_backups_folder_on_the_first_s3_storage() {
        let cfg = Config::parse(
            r#"
[storages.local]
type = "local"
path = "/tmp/x"

[storages.s3]
type = "s3"
bucket = "bkt"
prefix = "/prod/"
endpoint = "http://minio:9000/"

[targets.analytics]
engine = "clickhouse"
kind = "native"
storages = ["local", "s3"]
"#,
            "b.toml",
        )
        .unwrap();
        let t = Target::resolve(&cfg, "analytics").unwrap();
        let o = super::super::Options::default();
        let c = super::super::client(&o).unwrap();
        let n = NativeKind::new(Logical::new(o, c), &t);
        let d = n.dest("20261130T040000Z", "my.db").unwrap();
        assert_eq!(
            d.url,
            "http://minio:9000/bkt/prod/analytics/20261130T040000Z/native/my%2Edb/"
        );
        // Without an S3 storage the run is refused before anything happens.
        let local_only = Config::parse(
            "[storages.local]\ntype = \"local\"\npath = \"/tmp/x\"\n[targets.a]\nengine = \"clickhouse\"\nkind = \"native\"\nstorages = [\"local\"]\n",
            "b.toml",
        )
        .unwrap();
        let t = Target::resolve(&local_only, "a").unwrap();
        let o = super::super::Options::default();
        let c = super::super::client(&o).unwrap();
        let e = NativeKind::new(Logical::new(o, c), &t)
            .dest("x", "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs an S3 storage"), "{e}");
    }
}
