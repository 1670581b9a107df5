//! `backup daemon`: runs every schedule of the configuration in the foreground.
//!
//! Each job is the tool's own subcommand (`backup run pg`, `backup prune pg --yes`...)
//! run as a child process of the same binary, in its own process group. A job that
//! crashes or leaks cannot take the daemon down, each job keeps its own signal cleanup
//! (partial backups, scratch clusters), and the per-target lock in the child still
//! refuses a run that overlaps one started outside the daemon. The daemon itself never
//! starts a job for a target while another job of that target is running.

pub mod http;
pub mod log;
pub mod state;

use crate::config::Config;
use crate::engine::schedule::{self, Job};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use log::Log;
use rand::Rng;
use serde_json::json;
use state::FireState;
use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const DEFAULT_MAX_JOBS: usize = 2;
const DEFAULT_GRACE: &str = "5m";
/// After the grace period, how long cancelled jobs get to clean up before SIGKILL.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(200);

pub struct Options {
    /// `--config` as given, to reload the same file on SIGHUP and pass it to jobs.
    pub config_path: Option<PathBuf>,
    pub log: Log,
}

struct Running {
    job: Job,
    child: Child,
    started: Instant,
}

struct Planned {
    job: Job,
    /// The scheduled time (without jitter).
    at: DateTime<Utc>,
    /// When to start it: `at` plus jitter.
    start: DateTime<Utc>,
}

/// Loads the configuration as the CLI does (engine keys checked).
pub type Loader = dyn Fn(Option<&Path>) -> Result<Config>;

pub fn run(cfg: Config, opts: Options, load: &Loader) -> Result<()> {
    let log = opts.log;
    let hup = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone())?;
    }
    let exe = std::env::current_exe().context("finding the backup binary to run jobs")?;
    let shared = Arc::new(RwLock::new(cfg.clone()));
    let stop_http = Arc::new(AtomicBool::new(false));
    let listen = cfg.daemon.as_ref().and_then(|d| d.listen.clone());
    let http = match &listen {
        Some(addr) => Some(http::serve(addr, shared.clone(), stop_http.clone(), log)?),
        None => None,
    };
    let mut d = Daemon {
        cfg,
        opts,
        exe,
        plan: BTreeMap::new(),
        queue: VecDeque::new(),
        running: Vec::new(),
        fires: FireState::default(),
        snapshot: std::cell::RefCell::new(None),
    };
    d.snapshot_config();
    d.fires = FireState::load(&d.cfg.state_dir());
    d.replan(true);
    d.audit("daemon_start", &Ok(()));
    log.event(
        "daemon_start",
        &[
            ("pid", json!(std::process::id())),
            ("config", json!(d.cfg.describe_source())),
            ("jobs", json!(d.plan.len())),
            ("listen", json!(listen)),
        ],
    );
    while !term.load(Ordering::SeqCst) {
        if hup.swap(false, Ordering::SeqCst) {
            d.reload(load, &shared);
        }
        d.reap();
        d.fire_due();
        d.launch();
        std::thread::sleep(TICK);
    }
    d.shutdown();
    stop_http.store(true, Ordering::SeqCst);
    if let Some(h) = http {
        let _ = h.join();
    }
    log.event("daemon_stop", &[]);
    Ok(())
}

struct Daemon {
    cfg: Config,
    opts: Options,
    exe: PathBuf,
    plan: BTreeMap<String, Planned>,
    queue: VecDeque<(Job, DateTime<Utc>)>,
    running: Vec<Running>,
    fires: FireState,
    /// The last valid configuration's copy the jobs read, and its original folder.
    snapshot: std::cell::RefCell<Option<(PathBuf, PathBuf)>>,
}

impl Daemon {
    fn log(&self) -> Log {
        self.opts.log
    }

    fn daemon_key<T>(&self, f: impl Fn(&crate::config::DaemonConfig) -> Option<T>) -> Option<T> {
        self.cfg.daemon.as_ref().and_then(f)
    }

    fn jitter(&self) -> chrono::Duration {
        let max = self
            .daemon_key(|d| d.jitter.clone())
            .and_then(|j| crate::duration::parse(&j).ok())
            .unwrap_or_default();
        if max.is_zero() {
            return chrono::Duration::zero();
        }
        let ms = rand::thread_rng().gen_range(0..=max.as_millis() as i64);
        chrono::Duration::milliseconds(ms)
    }

    /// (Re)computes every job's next fire time. At start, a job whose last recorded
    /// fire is followed by an occurrence already past is queued once (catch-up).
    fn replan(&mut self, starting: bool) {
        let now = Utc::now();
        let catch_up = self.daemon_key(|d| d.catch_up).unwrap_or(true);
        let mut plan = BTreeMap::new();
        for job in schedule::jobs(&self.cfg) {
            if let Some(old) = self.plan.remove(&job.id) {
                if old.job.cron == job.cron && old.job.tz == job.tz {
                    plan.insert(job.id.clone(), Planned { job, ..old });
                    continue;
                }
            }
            match self.fires.last.get(&job.id) {
                Some(last) if starting && catch_up => {
                    if let Some(missed) = job.next_after(*last).filter(|m| *m <= now) {
                        self.log().event(
                            "catch_up",
                            &[("job", json!(job.id)), ("missed", json!(missed))],
                        );
                        self.fires.last.insert(job.id.clone(), missed);
                        self.queue.push_back((job.clone(), missed));
                    }
                }
                Some(_) => {}
                None => {
                    self.fires.last.insert(job.id.clone(), now);
                }
            }
            if let Some(at) = job.next_after(now) {
                let start = at + self.jitter();
                plan.insert(job.id.clone(), Planned { job, at, start });
            }
        }
        self.plan = plan;
        self.save_fires();
    }

    /// The audit trail's line for a start or reload; a failure to write is logged.
    fn audit(&self, command: &str, res: &Result<()>) {
        if self.cfg.audit_log.is_none() && !self.cfg.audit_syslog {
            return;
        }
        let mut act = crate::watch::audit::Act::new(command, None).outcome_of(res);
        act.details = json!({
            "config": self.cfg.describe_source(),
            "jobs": self.plan.keys().collect::<Vec<_>>(),
        });
        if let Err(e) = crate::watch::audit::write(&self.cfg, &[act]) {
            self.log()
                .event("audit_error", &[("error", json!(format!("{e:#}")))]);
        }
    }

    /// Jobs read the last valid configuration, not the file as it is now: after a
    /// reload that failed, the file on disk is the broken one.
    fn snapshot_config(&self) {
        let (Some(text), Some(src)) = (self.cfg.text(), &self.cfg.source) else {
            return;
        };
        let path = self.cfg.state_dir().join("daemon-config.toml");
        let res = std::fs::create_dir_all(self.cfg.state_dir())
            .map_err(anyhow::Error::from)
            .and_then(|_| crate::watch::sink::write_atomic(&path, text.as_bytes()));
        match res {
            Ok(()) => {
                let dir = src.parent().map(Path::to_path_buf).unwrap_or_default();
                let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
                self.snapshot.replace(Some((path, dir)));
            }
            Err(e) => self.log().event(
                "state_error",
                &[("error", json!(format!("{}: {e:#}", path.display())))],
            ),
        }
    }

    fn save_fires(&self) {
        if let Err(e) = self.fires.save(&self.cfg.state_dir()) {
            self.log()
                .event("state_error", &[("error", json!(format!("{e:#}")))]);
        }
    }

    fn reload(&mut self, load: &Loader, shared: &RwLock<Config>) {
        match load(self.opts.config_path.as_deref()) {
            Ok(cfg) => {
                self.cfg = cfg.clone();
                if let Ok(mut s) = shared.write() {
                    *s = cfg;
                }
                self.replan(false);
                self.snapshot_config();
                for (key, w) in crate::config::schedule_warnings(&self.cfg) {
                    self.log()
                        .event("warning", &[("key", json!(key)), ("message", json!(w))]);
                }
                self.log()
                    .event("reload", &[("jobs", json!(self.plan.len()))]);
                self.audit("daemon_reload", &Ok(()));
            }
            Err(e) => {
                self.log().event(
                    "reload_failed",
                    &[
                        ("error", json!(format!("{e:#}"))),
                        ("kept", json!("the previous configuration")),
                    ],
                );
                self.audit("daemon_reload", &Err(e));
            }
        }
    }

    /// Queues every job whose time has come; a job still queued is not queued twice.
    fn fire_due(&mut self) {
        let now = Utc::now();
        let mut fired = false;
        let due: Vec<String> = self
            .plan
            .iter()
            .filter(|(_, p)| p.start <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let jitter = self.jitter();
            let Some(p) = self.plan.get_mut(&id) else {
                continue;
            };
            let (job, at) = (p.job.clone(), p.at);
            match job.next_after(now.max(at)) {
                Some(next) => {
                    p.at = next;
                    p.start = next + jitter;
                }
                None => {
                    self.plan.remove(&id);
                }
            }
            self.fires.last.insert(id.clone(), at);
            fired = true;
            if self.queue.iter().any(|(j, _)| j.id == id) {
                self.log().event(
                    "job_skipped",
                    &[
                        ("job", json!(id)),
                        ("scheduled", json!(at)),
                        (
                            "reason",
                            json!("the previous run of this job is still waiting"),
                        ),
                    ],
                );
                continue;
            }
            self.queue.push_back((job, at));
        }
        if fired {
            self.save_fires();
        }
    }

    /// Starts queued jobs while slots are free, one job per target at a time.
    fn launch(&mut self) {
        let max = self
            .daemon_key(|d| d.max_concurrent_jobs)
            .unwrap_or(DEFAULT_MAX_JOBS);
        let mut i = 0;
        while i < self.queue.len() && self.running.len() < max {
            let busy = self
                .running
                .iter()
                .any(|r| r.job.target == self.queue[i].0.target);
            if busy {
                i += 1;
                continue;
            }
            let (job, at) = self.queue.remove(i).expect("index checked");
            self.start(job, at);
        }
    }

    fn start(&mut self, job: Job, at: DateTime<Utc>) {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--no-progress");
        match &*self.snapshot.borrow() {
            Some((snap, dir)) => {
                cmd.arg("--config").arg(snap).env("BACKUP_CONFIG_DIR", dir);
            }
            None => {
                if let Some(p) = &self.opts.config_path {
                    cmd.arg("--config").arg(p);
                }
            }
        }
        cmd.args(job.command())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the daemon's terminal reaches the
            // daemon only, which decides when the job is cancelled.
            .process_group(0);
        match cmd.spawn() {
            Ok(mut child) => {
                let fields = [
                    ("job", json!(job.id)),
                    ("target", json!(job.target)),
                    ("what", json!(job.kind.as_str())),
                    ("scheduled", json!(at)),
                    ("pid", json!(child.id())),
                    ("command", json!(job.command().join(" "))),
                ];
                self.log().event("job_start", &fields);
                for (stream, out) in [
                    (
                        "stdout",
                        child
                            .stdout
                            .take()
                            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                    ),
                    (
                        "stderr",
                        child
                            .stderr
                            .take()
                            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                    ),
                ] {
                    if let Some(out) = out {
                        forward(self.log(), job.id.clone(), stream, out);
                    }
                }
                self.running.push(Running {
                    job,
                    child,
                    started: Instant::now(),
                });
            }
            Err(e) => self.log().event(
                "job_error",
                &[
                    ("job", json!(job.id)),
                    (
                        "error",
                        json!(format!("cannot start {}: {e}", self.exe.display())),
                    ),
                ],
            ),
        }
    }

    /// Logs and forgets the jobs that ended.
    fn reap(&mut self) {
        let log = self.log();
        self.running.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                job_end(log, r, status);
                false
            }
            Ok(None) => true,
            Err(e) => {
                log.event(
                    "job_error",
                    &[("job", json!(r.job.id)), ("error", json!(e.to_string()))],
                );
                false
            }
        });
    }

    /// SIGTERM: no new jobs; running ones may finish within the grace period, then
    /// get SIGTERM (their own cleanup removes partial backups), then SIGKILL.
    fn shutdown(&mut self) {
        let grace = self
            .daemon_key(|d| d.grace_period.clone())
            .unwrap_or_else(|| DEFAULT_GRACE.into());
        let grace_d = crate::duration::parse(&grace).unwrap_or(Duration::from_secs(300));
        self.log().event(
            "daemon_stopping",
            &[
                ("running", json!(self.running.len())),
                ("queued_dropped", json!(self.queue.len())),
                ("grace_period", json!(grace)),
            ],
        );
        self.queue.clear();
        if !self.wait_all(grace_d) {
            for r in &self.running {
                self.log().event(
                    "job_cancel",
                    &[("job", json!(r.job.id)), ("pid", json!(r.child.id()))],
                );
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
            }
            if !self.wait_all(CANCEL_WAIT) {
                for r in &mut self.running {
                    let _ = r.child.kill();
                }
                self.wait_all(Duration::from_secs(5));
            }
        }
    }

    /// Reaps until nothing runs or `limit` passes; true when nothing runs.
    fn wait_all(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            self.reap();
            if self.running.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(TICK);
        }
    }
}

fn job_end(log: Log, r: &Running, status: std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    let code = status.code();
    let outcome = match code {
        Some(0) => "ok",
        Some(4) => "locked",
        Some(_) => "failed",
        None => "killed",
    };
    log.event(
        "job_end",
        &[
            ("job", json!(r.job.id)),
            ("target", json!(r.job.target)),
            ("outcome", json!(outcome)),
            ("exit_code", json!(code)),
            ("signal", json!(status.signal())),
            (
                "seconds",
                json!((r.started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
            ),
        ],
    );
}

/// One log event per line the job prints.
fn forward(log: Log, job: String, stream: &'static str, out: Box<dyn std::io::Read + Send>) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if !line.trim().is_empty() {
                log.event(
                    "job_output",
                    &[
                        ("job", json!(job)),
                        ("stream", json!(stream)),
                        ("line", json!(line)),
                    ],
                );
            }
        }
    });
}
