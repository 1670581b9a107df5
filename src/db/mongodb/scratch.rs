//! `backup test-restore` for MongoDB ([`ScratchEngine`]): this tool cannot start a
//! mongod, so the backup is restored into a scratch database on `test_restore.uri`
//! (every namespace renamed with `--nsFrom '$db$.$coll$' --nsTo
//! 'SCRATCH.$db$.$coll$'`, admin/config/local left out, no oplog replay), through the
//! ordinary restore path (verify first). Then every collection's document count is
//! compared with the manifest, and the scratch database is dropped on every way out
//! (errors and signals included).

use super::tools::drop_database;
use super::{Conn, Mongo};
use crate::db::{Check, RestoreOptions, ScratchEngine, ScratchOutcome, ScratchRequest, Target};
use crate::engine::cleanup::CleanupGuard;
use crate::error::Fail;
use crate::manifest::Manifest;
use crate::storage::Storage;
use crate::ui::Ui;
use anyhow::Result;
use std::sync::{Arc, Mutex};

impl ScratchEngine for Mongo {
    fn test_restore(
        &mut self,
        t: &Target,
        storage: &dyn Storage,
        m: &Manifest,
        req: &ScratchRequest,
        ui: &Ui,
    ) -> Result<ScratchOutcome> {
        let trc = req.settings;
        let uri = trc.uri.clone().ok_or_else(|| {
            Fail::Usage(format!(
                "target `{}`: a MongoDB test-restore needs test_restore.uri, a server to restore into a scratch database (e.g. a staging mongod); this tool cannot start a mongod itself",
                t.name
            ))
        })?;
        let conn =
            Conn::other(&uri).map_err(|e| Fail::Usage(format!("test_restore.uri: {e:#}")))?;
        let name = format!(
            "backup_scratch_{}",
            m.id.to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        let mut eng = Mongo {
            target: self.target.clone(),
            opts: self.opts.clone(),
            conn: conn.clone(),
            server: None,
            tools: self.tools.clone(),
            use_oplog: false,
            oplog_touched: Default::default(),
            restore_format: String::new(),
            restored: Vec::new(),
            scratch_db: Some(name.clone()),
        };
        let sh = eng.tools.get("mongosh")?;
        // A leftover of a killed run (SIGKILL cannot be caught) is ours by name.
        drop_database(&sh, &conn, &name)?;
        let outcome: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let guard = {
            let (sh, conn, name, outcome) =
                (sh.clone(), conn.clone(), name.clone(), outcome.clone());
            CleanupGuard::new(move || {
                let r = drop_database(&sh, &conn, &name);
                if let Err(e) = &r {
                    eprintln!("could not drop scratch database {name}: {e:#}; drop it by hand");
                }
                *outcome.lock().unwrap() = Some(
                    r.map(|_| String::new())
                        .unwrap_or_else(|e| format!("{e:#}")),
                );
            })
        };

        let opts = RestoreOptions {
            to_url: Some(uri.clone()),
            ..Default::default()
        };
        let (restored, restore_seconds, check) = crate::engine::test_restore::timed_restore(
            t,
            &mut eng,
            storage,
            m,
            opts.clone(),
            trc.temp_dir.clone(),
            ui,
        );
        let mut check = check;
        if restored {
            check.detail = check
                .detail
                .replacen("restored", &format!("restored into {name}"), 1);
        }
        let mut checks = vec![check];
        if restored {
            checks.push(crate::engine::test_restore::counts_check(
                &mut eng,
                &opts,
                m,
                "document counts",
                ("collection", "document"),
            ));
        }
        drop(guard);
        let dropped = outcome.lock().unwrap().take().unwrap_or_default();
        checks.push(Check::new(
            "scratch dropped",
            dropped.is_empty(),
            if dropped.is_empty() {
                format!("dropped scratch database {name}")
            } else {
                dropped
            },
        ));
        Ok(ScratchOutcome {
            place: format!("scratch database {name} on {}", conn.display()),
            restore_seconds,
            restored,
            checks,
        })
    }
}
