//! Replaying a verified dump into PostgreSQL: plain SQL through psql with
//! `--single-transaction` and ON_ERROR_STOP (a failed restore leaves the database as
//! it was), custom archives through pg_restore (`--table` selection from the TOC,
//! `--clean`, parallel jobs into a freshly created database).

use super::toc::table_selection;
use super::tools::{one_paragraph, quote_ident, quote_literal, spawn_stderr_collector, Psql};
use super::Postgres;
use crate::db::RestoreOptions;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

impl Postgres {
    /// Restores a verified local dump: psql in one transaction for plain SQL, pg_restore
    /// for custom archives (parallel into a fresh database, else one transaction).
    pub(super) fn restore_file(
        &mut self,
        file: &Path,
        compression: crate::compress::Compression,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let psql = self.psql()?;
        let db = opts.to_database.clone();
        let mut created = false;
        if let Some(d) = &db {
            let mut s = Psql::connect(&psql, &self.conn, Some("postgres"))
                .or_else(|_| Psql::connect(&psql, &self.conn, None))?;
            let exists = s.query_one(&format!(
                "SELECT count(*) FROM pg_database WHERE datname = {}",
                quote_literal(d)
            ))? != "0";
            if !exists {
                s.query(&format!("CREATE DATABASE {}", quote_ident(d)))
                    .with_context(|| format!("creating database {d}"))?;
                created = true;
            }
            s.close()?;
        }
        let ci = self.conn.conninfo(db.as_deref());
        // Only an uncompressed artifact can be a custom archive (pg_restore reads it).
        let compressed = compression != crate::compress::Compression::None;
        if self.pg_restore.is_none()
            && !compressed
            && file.extension().is_some_and(|e| e == "pgdump")
        {
            self.pg_restore = Some(self.tool("pg_restore")?);
        }
        match (&self.pg_restore, compressed) {
            (Some(pg_restore), false) => {
                let mut cmd = Command::new(&pg_restore.path);
                cmd.args(["--no-password", "--exit-on-error"]);
                if opts.clean {
                    cmd.args(["--clean", "--if-exists"]);
                }
                // Keep the list file alive until pg_restore is done with it.
                let mut _list_file = None;
                if !opts.tables.is_empty() {
                    let mut s = Psql::connect(&psql, &self.conn, db.as_deref())?;
                    let (list, schemas) =
                        table_selection(pg_restore, file, &opts.tables, |schema, table| {
                            s.query_one(&format!(
                                "SELECT to_regclass({}) IS NOT NULL",
                                quote_literal(&format!(
                                    "{}.{}",
                                    quote_ident(schema),
                                    quote_ident(table)
                                ))
                            ))
                            .is_ok_and(|v| v == "t")
                        })?;
                    // The tables' schemas must exist (a scratch database has none of them).
                    for schema in schemas.iter().filter(|s| s.as_str() != "public") {
                        s.query(&format!(
                            "CREATE SCHEMA IF NOT EXISTS {}",
                            quote_ident(schema)
                        ))
                        .with_context(|| format!("creating schema {schema}"))?;
                    }
                    s.close()?;
                    let mut f = tempfile::Builder::new()
                        .prefix("backup-restore-list-")
                        .tempfile()
                        .context("writing the pg_restore list file")?;
                    f.write_all(list.as_bytes())?;
                    f.flush()?;
                    cmd.arg(format!("--use-list={}", f.path().display()));
                    _list_file = Some(f);
                }
                // Parallel jobs only into a fresh database; otherwise one transaction, so a
                // failure leaves the database as it was.
                let jobs = opts.jobs.or(self.opts.restore_jobs).unwrap_or(2);
                let parallel = created && opts.tables.is_empty() && jobs > 1;
                if parallel {
                    cmd.arg(format!("--jobs={jobs}"));
                } else {
                    cmd.arg("--single-transaction");
                }
                if !ci.is_empty() {
                    cmd.arg(format!("--dbname={ci}"));
                } else {
                    // pg_restore needs -d to restore rather than print SQL.
                    let d = self
                        .server
                        .as_ref()
                        .map(|s| s.database.clone())
                        .unwrap_or_default();
                    cmd.arg(format!("--dbname={}", self.conn.conninfo(Some(&d))));
                }
                cmd.arg(file);
                self.conn.apply(&mut cmd);
                let child = cmd
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("running pg_restore")?;
                // A signal must stop pg_restore too: left running, it would finish (or,
                // with --single-transaction, commit) after this process said it stopped.
                let _stop = stop_on_signal(
                    child.id(),
                    "pg_restore",
                    if parallel {
                        format!(
                            "the new database `{}` is incomplete: drop it",
                            db.as_deref().unwrap_or("?")
                        )
                    } else {
                        "its transaction was rolled back, the database is as it was".into()
                    },
                );
                let out = child.wait_with_output().context("running pg_restore")?;
                if !out.status.success() {
                    let msg = one_paragraph(&String::from_utf8_lossy(&out.stderr));
                    let outcome = if parallel {
                        format!(
                            "the new database `{}` is incomplete",
                            db.as_deref().unwrap_or("?")
                        )
                    } else {
                        "rolled back, the database is as it was".to_string()
                    };
                    let fix = if !opts.clean && msg.contains("already exists") {
                        "; the database already has these objects: add --clean to replace them, or restore with --to-database NEW_DB"
                    } else {
                        ""
                    };
                    bail!("pg_restore failed ({outcome}): {msg}{fix}");
                }
            }
            _ => {
                let mut cmd = Command::new(&psql.path);
                cmd.args([
                    "-X",
                    "-q",
                    "-w",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--single-transaction",
                    "-o",
                    "/dev/null",
                ]);
                if !ci.is_empty() {
                    cmd.arg(format!("--dbname={ci}"));
                }
                self.conn.apply(&mut cmd);
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let mut child = cmd.spawn().context("starting psql")?;
                // psql commits at the end of its input: were this process to die, the
                // closed pipe would look like the end of the dump and a partial restore
                // would be committed. So a signal kills psql first (the server then rolls
                // the transaction back), and so does a failure to feed it.
                let _stop = stop_on_signal(
                    child.id(),
                    "psql",
                    "its transaction was rolled back, the database is as it was".into(),
                );
                let stderr = Arc::new(Mutex::new(String::new()));
                let t = spawn_stderr_collector(child.stderr.take().unwrap(), stderr.clone());
                let mut stdin = child.stdin.take().unwrap();
                let f = std::fs::File::open(file)?;
                let mut src: Box<dyn Read> =
                    compression.decoder(std::io::BufReader::with_capacity(1 << 20, f))?;
                let copy = std::io::copy(&mut src, &mut stdin);
                // Never let psql see an end of input it would commit: if reading the
                // dump failed, stop psql first (the server rolls back). A broken pipe
                // is psql itself leaving (ON_ERROR_STOP): its own status says why.
                let stopped = copy
                    .as_ref()
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::BrokenPipe)
                    && child.kill().is_ok();
                drop(stdin);
                let st = child.wait()?;
                let _ = t.join();
                let err = stderr.lock().unwrap().clone();
                // Errors as text: a broken pipe in the chain would read as a closed stdout.
                if stopped {
                    bail!(
                        "feeding the dump to psql failed ({}); psql was stopped, the restore was rolled back",
                        copy.err().map(|e| e.to_string()).unwrap_or_default()
                    );
                }
                if !st.success() {
                    bail!(
                        "psql failed, the restore was rolled back: {}",
                        one_paragraph(&err)
                    );
                }
                if let Err(e) = copy {
                    bail!("feeding the dump to psql: {e}");
                }
            }
        }
        Ok(())
    }
}

/// Kills `pid` (a restore tool) when a signal stops this process, saying what state
/// the database is left in.
fn stop_on_signal(
    pid: u32,
    tool: &'static str,
    state: String,
) -> crate::engine::cleanup::CleanupGuard {
    crate::engine::cleanup::CleanupGuard::new(move || {
        // A guard also runs when it goes out of scope; by then the tool has exited and
        // been waited for, and its pid may belong to someone else.
        if !crate::engine::cleanup::terminating() {
            return;
        }
        // SAFETY: signalling our own child by pid (not yet waited for: a signal).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        eprintln!("interrupted: {tool} stopped; {state}");
    })
}
