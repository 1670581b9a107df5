//! Cleanup on every way out: a guard runs its action when dropped, and also when the
//! process gets SIGINT, SIGTERM or SIGHUP (a signal thread runs every registered
//! action, then exits with 128+signal). Used for partial backups and scratch servers.
//!
//! The registry is process-wide because signals are: it is the one piece of global
//! state, and only guards touch it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

type Cleanup = Arc<dyn Fn() + Send + Sync>;

fn registry() -> &'static Mutex<BTreeMap<u64, Cleanup>> {
    static R: OnceLock<Mutex<BTreeMap<u64, Cleanup>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

static SIGNAL_PIPE: OnceLock<(i32, i32)> = OnceLock::new();
/// Set once a signal arrived: the signal thread owns the cleanup and the exit.
static TERMINATING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a signal arrived and the signal thread is cleaning up: work that would
/// create more to clean up (a statement on a server) should not start.
pub fn terminating() -> bool {
    TERMINATING.load(std::sync::atomic::Ordering::SeqCst)
}

extern "C" fn on_signal(sig: libc::c_int) {
    if let Some((_, w)) = SIGNAL_PIPE.get() {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the fd stays open for the process.
        unsafe {
            libc::write(*w, &b as *const u8 as *const libc::c_void, 1);
        }
    }
}

/// Installs the signal handlers once: the handler only writes the signal number to a
/// pipe; a thread reads it, runs every registered cleanup and exits with 128+signal.
/// Installs the SIGINT/SIGTERM/SIGHUP handlers that run every registered cleanup and
/// exit 128 + the signal. Idempotent.
pub fn install() {
    install_signal_cleanup();
}

fn install_signal_cleanup() {
    if SIGNAL_PIPE.get().is_some() {
        return;
    }
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return;
    }
    if SIGNAL_PIPE.set((fds[0], fds[1])).is_err() {
        return;
    }
    let r = fds[0];
    std::thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(r, &mut b as *mut u8 as *mut libc::c_void, 1) };
        if n != 1 {
            return;
        }
        TERMINATING.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("signal {b} received: cleaning up before exiting");
        let cleanups: Vec<Cleanup> = registry().lock().unwrap().values().cloned().collect();
        for c in cleanups {
            c();
        }
        std::process::exit(128 + b as i32);
    });
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls write(2).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Runs `cleanup` when dropped or when the process is signalled, exactly once.
pub struct CleanupGuard {
    id: u64,
    action: Cleanup,
}

impl CleanupGuard {
    pub fn new(action: impl Fn() + Send + Sync + 'static) -> CleanupGuard {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        install_signal_cleanup();
        // The mutex makes a second caller (the signal thread) wait until a cleanup that
        // is under way has finished, instead of exiting half-way through it.
        let done = Arc::new(Mutex::new(false));
        let action: Cleanup = Arc::new(move || {
            let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
            if !*d {
                action();
                *d = true;
            }
        });
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        registry().lock().unwrap().insert(id, action.clone());
        CleanupGuard { id, action }
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if TERMINATING.load(std::sync::atomic::Ordering::SeqCst) {
            // The signal thread is cleaning up and will exit with 128+signal; the work
            // it interrupted must not finish with a misleading result meanwhile.
            loop {
                std::thread::park();
            }
        }
        (self.action)();
        registry().lock().unwrap().remove(&self.id);
    }
}
