//! A panic does not take the services down. The hook logs the panic and
//! its backtrace, then re-executes the same program in place
//! (`/proc/self/exe`: the image running now, even if its file was
//! replaced since) with the supervisor's state as of the end of the last
//! loop turn that changed something ([`remember`]): same pid, same
//! children, adopted again by the new image (`supervisor/handover.rs`).
//! A second panic within [`PANIC_WINDOW`] of the first gives up: abort,
//! and systemd's restart takes over as it would without this.
//!
//! The state is kept ready rather than built in the hook: a panic may come
//! in the middle of a transition (a service's lifecycle taken out of it
//! while its decision runs), and only a state from between two turns is
//! whole.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, OnceLock};

use tracing::error;

use super::handover::{gives_up, Anchor, Mono, PANIC_WINDOW};
use crate::sys::reexec;

/// The last whole state, encoded, and the descriptors it names.
struct Kept {
    bytes: Vec<u8>,
    fds: Vec<RawFd>,
}

static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

/// The next image's `run` arguments before `--handover`, and when the
/// previous panic was (this image's `--panicked-at`).
static PLAN: OnceLock<(Vec<String>, Option<Mono>)> = OnceLock::new();

/// Keeps `bytes` (a handover naming `fds`) for a panic.
pub fn remember(bytes: Vec<u8>, fds: Vec<RawFd>) {
    if let Ok(mut k) = KEPT.lock() {
        *k = Some(Kept { bytes, fds });
    }
}

/// Installs the hook for the daemon: `argv` starts the next image (up to
/// its `--handover`), `previous` is when this image's predecessor panicked.
pub fn install(argv: Vec<String>, previous: Option<Mono>) {
    if PLAN.set((argv, previous)).is_err() {
        return;
    }
    std::panic::set_hook(Box::new(on_panic));
}

fn on_panic(info: &std::panic::PanicHookInfo<'_>) {
    let backtrace = std::backtrace::Backtrace::force_capture();
    error!("venussup panicked: {info}\n{backtrace}");
    let now = Anchor::now().mono;
    let Some((argv, previous)) = PLAN.get() else {
        std::process::abort();
    };
    if gives_up(*previous, now) {
        error!(
            "a second panic within {} of the last one: giving up (abort); systemd's restart takes over",
            humantime::format_duration(PANIC_WINDOW)
        );
        std::process::abort();
    }
    let kept = KEPT.try_lock().ok().and_then(|mut k| k.take());
    let Some(kept) = kept else {
        error!("no state to hand over yet (the panic came before the loop ran): abort");
        std::process::abort();
    };
    let e = reexec_with(kept, argv, now);
    error!("the re-exec after the panic failed ({e}): abort");
    std::process::abort();
}

/// Re-executes this program with `kept`; returns only on failure.
fn reexec_with(kept: Kept, argv: &[String], now: Mono) -> String {
    let memfd = match reexec::memfd_with(c"venussup-handover", &kept.bytes) {
        Ok(fd) => fd,
        Err(e) => return format!("failed to make the memfd: {e}"),
    };
    let mut args = argv.to_vec();
    args.extend([
        "--handover".to_string(),
        memfd.as_raw_fd().to_string(),
        "--panicked-at".to_string(),
        now.0.to_string(),
    ]);
    let Ok(args) = args
        .into_iter()
        .map(CString::new)
        .collect::<Result<Vec<_>, _>>()
    else {
        return "an argument holds a NUL byte".to_string();
    };
    for fd in &kept.fds {
        // A number closed since the state was kept fails here, harmlessly;
        // the new image checks each descriptor's inode before using it.
        let _ = reexec::set_inherit_raw(*fd, true);
    }
    if let Err(e) = reexec::hold(&crate::runtime::signals::HELD) {
        return format!("failed to hold the signals: {e}");
    }
    let env = environment();
    let e = reexec::exec(c"/proc/self/exe", &args, &env);
    format!("execve /proc/self/exe: {e}")
}

/// This process's environment, as `execve` takes it (systemd's
/// `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` among it: the same
/// pid answers to them).
pub fn environment() -> Vec<CString> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}
