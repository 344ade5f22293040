//! `venussup smt off|on|status`: take SMT siblings offline, bring back what
//! venussup took offline, or show the state.

use std::path::{Path, PathBuf};

use crate::config::DEFAULT_STATE_DIR;
use crate::smt::{self, Report};
use crate::util::fsroot::FsRoot;

use super::exit;
use super::print_stdout;

/// What `venussup smt` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Off,
    On,
    Status,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::On => "on",
            Action::Status => "status",
        }
    }
}

/// The parsed command line of `venussup smt`.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub action: Action,
    /// `on --all`: every offline CPU, not only those venussup took.
    pub all: bool,
    pub dry_run: bool,
    pub config: Option<&'a Path>,
    pub fs_root: FsRoot,
    pub json: bool,
}

/// The host's state folder (a host path, mapped through `--fs-root` by the
/// caller): `[host] state_dir` of the config, or [`DEFAULT_STATE_DIR`].
///
/// Stand-in until the config loader lands: it reads only this one key.
pub fn state_dir_for(config: Option<&Path>) -> Result<PathBuf, String> {
    match config {
        None => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        Some(path) => crate::config::load_valid(path).map(|c| c.host.state_dir),
    }
}

pub fn run(options: &Options<'_>) -> u8 {
    let command = format!("venussup smt {}", options.action.name());
    if options.all && options.action != Action::On {
        eprintln!("{command}: --all goes only with `smt on`");
        return exit::USAGE;
    }
    if options.dry_run && options.action == Action::Status {
        eprintln!("{command}: --dry-run goes only with `smt off` or `smt on`");
        return exit::USAGE;
    }
    let state_dir = match state_dir_for(options.config) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("{command}: {e}");
            return exit::FAILURE;
        }
    };
    let fs_root = &options.fs_root;
    let printed = match options.action {
        Action::Off => {
            let report = smt::off(fs_root, &state_dir, options.dry_run);
            print_report(&command, &report, options.json)
        }
        Action::On => {
            let report = smt::on(fs_root, &state_dir, options.all, options.dry_run);
            print_report(&command, &report, options.json)
        }
        Action::Status => match smt::status(fs_root, &state_dir) {
            Ok(status) if options.json => print_json(&status),
            Ok(status) => print_stdout(&status.to_string()).map(|()| true),
            Err(e) => Err(e.to_string()),
        },
    };
    match printed {
        Ok(true) => exit::OK,
        Ok(false) => exit::FAILURE,
        Err(e) => {
            eprintln!("{command}: {e}");
            exit::FAILURE
        }
    }
}

/// Prints the report and its problems; `Ok(false)` if something failed.
fn print_report(command: &str, report: &Report, json: bool) -> Result<bool, String> {
    if json {
        print_json(report)?;
    } else {
        print_stdout(&format!("{report}\n"))?;
    }
    for problem in report.problems() {
        eprintln!("{command}: {problem}");
    }
    if report.sysfs_not_writable().is_some() {
        eprintln!("{command}: sysfs is not writable here (a container or a read-only /sys?); CPUs stay as they are");
    }
    Ok(report.succeeded())
}

fn print_json(value: &impl serde::Serialize) -> Result<bool, String> {
    let text = serde_json::to_string(value).map_err(|e| format!("failed to write JSON: {e}"))?;
    print_stdout(&(text + "\n"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn state_dir_defaults_without_config_or_key() {
        assert_eq!(
            state_dir_for(None).unwrap(),
            PathBuf::from(DEFAULT_STATE_DIR)
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("venussup.toml");
        fs::write(&config, "[host]\nsmt = \"off\"\n").unwrap();
        assert_eq!(
            state_dir_for(Some(&config)).unwrap(),
            PathBuf::from(DEFAULT_STATE_DIR)
        );
    }

    #[test]
    fn state_dir_comes_from_host_state_dir_of_a_valid_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("venussup.toml");
        fs::write(&config, "[host]\nstate_dir = \"/srv/venussup\"\n").unwrap();
        assert_eq!(
            state_dir_for(Some(&config)).unwrap(),
            PathBuf::from("/srv/venussup")
        );
        fs::write(&config, "[host]\nstate_dir = 3\n").unwrap();
        let err = state_dir_for(Some(&config)).unwrap_err();
        assert!(
            err.contains("venussup.toml:2:13: error: invalid type"),
            "{err}"
        );
        let err = state_dir_for(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(err.contains("cannot read the config file"), "{err}");
    }
}
