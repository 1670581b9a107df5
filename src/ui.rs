//! What people see on stderr: log lines and progress. stdout is reserved for data.
//!
//! On a terminal: short messages and indicatif progress bars. Under cron (stderr not a
//! terminal): timestamped log lines, and a progress line every 30 seconds.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Ui {
    pub quiet: bool,
    pub bars: bool,
    tty: bool,
}

impl Ui {
    pub fn new(quiet: bool, no_progress: bool) -> Ui {
        let tty = std::io::stderr().is_terminal();
        Ui {
            quiet,
            bars: tty && !quiet && !no_progress,
            tty,
        }
    }

    fn line(&self, level: &str, msg: &str) {
        if self.tty {
            if level == "INFO" {
                eprintln!("{msg}");
            } else {
                eprintln!("{}: {msg}", level.to_lowercase());
            }
        } else {
            eprintln!(
                "{} {level} {msg}",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
    }

    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            self.line("INFO", msg.as_ref());
        }
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        self.line("WARN", msg.as_ref());
    }

    pub fn error(&self, msg: impl AsRef<str>) {
        self.line("ERROR", msg.as_ref());
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// A counter that shows nothing (a worker's share of a job whose progress is
    /// shown elsewhere).
    pub fn silent(&self) -> Progress {
        Progress {
            bar: None,
            label: String::new(),
            bytes: 0,
            started: Instant::now(),
            last_log: Instant::now(),
            log: false,
            ui: self.clone(),
        }
    }

    /// A byte counter for a long operation.
    pub fn progress(&self, label: &str, total: Option<u64>) -> Progress {
        let bar = if self.bars {
            let pb = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let tmpl = if total.is_some() {
                "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{spinner} {msg} [{elapsed_precise}] {bytes} {bytes_per_sec}"
            };
            pb.set_style(
                ProgressStyle::with_template(tmpl).unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb.set_message(label.to_string());
            pb.enable_steady_tick(Duration::from_millis(200));
            Some(pb)
        } else {
            None
        };
        Progress {
            bar,
            label: label.to_string(),
            bytes: 0,
            started: Instant::now(),
            last_log: Instant::now(),
            log: !self.quiet && !self.bars,
            ui: self.clone(),
        }
    }
}

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    bytes: u64,
    started: Instant,
    last_log: Instant,
    log: bool,
    ui: Ui,
}

impl Progress {
    pub fn inc(&mut self, n: u64) {
        self.bytes += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.log && self.last_log.elapsed() >= Duration::from_secs(30) {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            self.ui.info(format!(
                "{}: {} so far ({}/s)",
                self.label,
                crate::duration::bytes(self.bytes),
                crate::duration::bytes((self.bytes as f64 / secs) as u64)
            ));
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
