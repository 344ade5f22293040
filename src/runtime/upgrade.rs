//! `venussup upgrade`: whether the daemon may hand over to a new program
//! now, and what that program's checks answer. Pure: `supervisor/upgrade.rs`
//! runs the checks as children (the loop never waits for them) and does
//! the exec.
//!
//! In order: nothing stands in the way (the daemon is not stopping, no
//! reload is still being applied, no other upgrade is under way, the
//! config on disk is the one loaded); the file is a regular, executable
//! file; its `--version` names a handover format at least the one this
//! daemon writes; `check` of the config passes under it. Only then is the
//! state written and the program replaced. A failure anywhere before the
//! exec leaves everything as it was, and the answer says why.

use std::path::Path;
use std::time::Duration;

use crate::runtime::handover;
use crate::status::ExitKind;

/// The longest `NEW --version` may take.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `NEW check` may take (it plans the whole host).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a failed check's output in the answer.
const OUTPUT_LINES: usize = 20;

/// What could make a handover now lose or confuse something.
#[derive(Debug, Default)]
pub struct Obstacles<'a> {
    pub stopping: bool,
    /// The binary an upgrade already under way is checking.
    pub upgrading: Option<&'a Path>,
    /// Services a reload removed or changed that have not stopped yet.
    pub reloading: Vec<&'a str>,
    /// The config file is not what the daemon last loaded.
    pub config_changed: bool,
}

/// Why no upgrade can start (or go on) now, if anything stands in the way.
pub fn refusal(o: &Obstacles<'_>) -> Option<String> {
    if o.stopping {
        return Some("venussup is stopping".into());
    }
    if let Some(b) = o.upgrading {
        return Some(format!(
            "an upgrade is already under way (to {})",
            b.display()
        ));
    }
    if !o.reloading.is_empty() {
        return Some(format!(
            "a reload is still being applied ({} still stopping); try again once it is done",
            o.reloading.join(", ")
        ));
    }
    if o.config_changed {
        return Some(
            "the config file changed since venussup loaded it: `venussup reload` first (or undo the change), then upgrade; the new program plans the config it finds"
                .into(),
        );
    }
    None
}

/// What the file system says of the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    pub regular: bool,
    /// Permission bits.
    pub mode: u32,
    /// `access(X_OK)` allows it.
    pub executable: bool,
}

/// Why `path` cannot be run as the new program.
pub fn file_problem(path: &Path, facts: Result<FileFacts, String>) -> Option<String> {
    let p = path.display();
    match facts {
        Err(e) => Some(format!("{p}: {e}")),
        Ok(f) if !f.regular => Some(format!("{p} is not a regular file")),
        Ok(f) if !f.executable || f.mode & 0o111 == 0 => Some(format!(
            "{p} is not executable (mode {:04o}); `install -m 0755` it",
            f.mode & 0o7777
        )),
        Ok(_) => None,
    }
}

/// The last lines of a check's output.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n")
}

/// How a check child ended, as the answer says it.
fn ended(how: ExitKind, timed_out: Option<Duration>) -> String {
    match timed_out {
        Some(d) => format!(
            "did not finish within {} (killed)",
            humantime::format_duration(d)
        ),
        None => how.to_string(),
    }
}

/// What `NEW --version` answered: its version and handover format, or
/// why it cannot take over.
pub fn version_answer(
    path: &Path,
    how: ExitKind,
    timed_out: Option<Duration>,
    output: &str,
) -> Result<(String, u32), String> {
    let p = path.display();
    if timed_out.is_some() || !how.success() {
        let out = tail(output);
        return Err(format!(
            "`{p} --version` {}{}: not a program that can take over",
            ended(how, timed_out),
            if out.is_empty() {
                String::new()
            } else {
                format!(":\n{out}")
            }
        ));
    }
    handover::candidate(output).map_err(|e| format!("{p}: {e}"))
}

/// What `NEW check --config ...` answered.
pub fn check_answer(
    path: &Path,
    how: ExitKind,
    timed_out: Option<Duration>,
    output: &str,
) -> Result<(), String> {
    if timed_out.is_none() && how.success() {
        return Ok(());
    }
    Err(format!(
        "`{} check` of the config {}; nothing was changed:\n{}",
        path.display(),
        ended(how, timed_out),
        tail(output)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obstacles_are_named() {
        assert_eq!(refusal(&Obstacles::default()), None);
        let o = Obstacles {
            reloading: vec!["worker02"],
            ..Obstacles::default()
        };
        assert!(refusal(&o).unwrap().contains("worker02 still stopping"));
        let o = Obstacles {
            config_changed: true,
            ..Obstacles::default()
        };
        assert!(refusal(&o).unwrap().contains("`venussup reload` first"));
        let o = Obstacles {
            stopping: true,
            config_changed: true,
            ..Obstacles::default()
        };
        assert_eq!(refusal(&o).unwrap(), "venussup is stopping");
    }

    #[test]
    fn a_file_must_be_regular_and_executable() {
        let p = Path::new("/usr/local/bin/venussup");
        let f = |regular, mode, executable| {
            Ok(FileFacts {
                regular,
                mode,
                executable,
            })
        };
        assert_eq!(file_problem(p, f(true, 0o755, true)), None);
        assert_eq!(
            file_problem(p, f(true, 0o644, false)).unwrap(),
            "/usr/local/bin/venussup is not executable (mode 0644); `install -m 0755` it"
        );
        assert!(file_problem(p, f(false, 0o755, true))
            .unwrap()
            .contains("not a regular file"));
        assert!(file_problem(p, Err("No such file or directory".into()))
            .unwrap()
            .ends_with("No such file or directory"));
    }

    #[test]
    fn the_version_line_must_name_a_format_this_daemon_writes() {
        let p = Path::new("/tmp/new");
        let ok = ExitKind::Code(0);
        let line = format!("venussup {}\n", handover::VERSION);
        let (v, f) = version_answer(p, ok, None, &line).unwrap();
        assert_eq!(
            (v.as_str(), f),
            (env!("CARGO_PKG_VERSION"), handover::FORMAT)
        );
        let old = version_answer(p, ok, None, "venussup 0.0.9\n").unwrap_err();
        assert!(old.contains("reads no handover"), "{old}");
        let crash = version_answer(p, ExitKind::Signal(11), None, "").unwrap_err();
        assert_eq!(
            crash,
            "`/tmp/new --version` killed by SIGSEGV: not a program that can take over"
        );
        let slow = version_answer(p, ExitKind::Signal(9), Some(VERSION_TIMEOUT), "").unwrap_err();
        assert!(slow.contains("did not finish within 10s"), "{slow}");
        let other = version_answer(p, ok, None, "bash 5.2\n").unwrap_err();
        assert!(other.contains("not a venussup version line"), "{other}");
    }

    #[test]
    fn a_failed_check_shows_its_last_lines() {
        let p = Path::new("/tmp/new");
        assert!(check_answer(p, ExitKind::Code(0), None, "plan...").is_ok());
        let out: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let e = check_answer(p, ExitKind::Code(1), None, &out).unwrap_err();
        assert!(
            e.starts_with(
                "`/tmp/new check` of the config exit code 1; nothing was changed:\nline 10\n"
            ),
            "{e}"
        );
        assert!(e.ends_with("line 29"));
    }
}
