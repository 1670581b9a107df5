//! Per-target locks so two runs of the same target never overlap.
//!
//! flock(2) on `<state_dir>/locks/<target>.lock`: the kernel drops the lock when the
//! holder dies, so a stale lock from a dead process is taken over without guesswork.
//! The file's content says who holds it, for the error message of the second run.

use crate::error::Fail;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub struct Lock {
    file: File,
}

impl Lock {
    pub fn acquire(state_dir: &Path, name: &str, what: &str) -> Result<Lock> {
        let dir = state_dir.join("locks");
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating lock folder {} (set state_dir in the config or BACKUP_STATE_DIR)",
                dir.display()
            )
        })?;
        let path = dir.join(format!("{name}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        // SAFETY: a valid open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Fail::Locked(format!(
                "target `{name}` is locked by another run ({}); lock file {}",
                if holder.is_empty() {
                    "unknown holder"
                } else {
                    holder
                },
                path.display()
            ))
            .into());
        }
        file.set_len(0)?;
        file.rewind()?;
        let host = hostname();
        writeln!(
            file,
            "pid {} on {host}: {what}, since {}",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        )?;
        file.flush()?;
        Ok(Lock { file })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // SAFETY: a valid open descriptor.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length.
    if unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        return String::from_utf8_lossy(&buf[..end]).into_owned();
    }
    "unknown-host".into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn second_holder_is_refused_and_lock_is_released() {
        let d = tempfile::tempdir().unwrap();
        let a = super::Lock::acquire(d.path(), "pg", "backup run pg").unwrap();
        let e = super::Lock::acquire(d.path(), "pg", "backup run pg")
            .err()
            .unwrap();
        assert_eq!(crate::error::exit_code(&e), 4);
        assert!(format!("{e}").contains("backup run pg"), "{e}");
        drop(a);
        super::Lock::acquire(d.path(), "pg", "again").unwrap();
    }
}
