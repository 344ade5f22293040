//! What a command needs from the host before anything runs: its `${VAR}`s
//! set, its program found the way `execvp` would find it, its user and
//! group present; so a typo is an error in `check` and not a crash loop.
//! Everything is asked through [`Host::lookups`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::expand::{expand, ExpandError};
use super::DEFAULT_PATH;
use crate::config::Config;
use crate::host::{FileKind, Host, Lookups};
use crate::util::diag::Diagnostics;

/// Where a command's program was looked for and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Found and executable.
    Found(PathBuf),
    /// An absolute path that is not on this host (a warning: examples name
    /// Venus binaries a test machine lacks).
    AbsentAbsolute(PathBuf),
    /// Exists but is not an executable file.
    NotExecutable(PathBuf),
    /// A relative path (taken from the config's folder) that does not exist.
    AbsentRelative(PathBuf),
    /// A bare name found in no folder of `PATH`.
    NotInPath(String),
}

fn is_executable(lookups: &dyn Lookups, p: &Path) -> bool {
    lookups.stat(p) == FileKind::File { executable: true }
}

fn check_file(lookups: &dyn Lookups, p: PathBuf, absent: fn(PathBuf) -> Lookup) -> Lookup {
    match lookups.stat(&p) {
        FileKind::Missing => absent(p),
        FileKind::File { executable: true } => Lookup::Found(p),
        _ => Lookup::NotExecutable(p),
    }
}

/// Looks `program` up: absolute as is, relative with a `/` from
/// `config_dir`, a bare name in the folders of `path_var`.
pub fn lookup(lookups: &dyn Lookups, program: &str, config_dir: &Path, path_var: &str) -> Lookup {
    let p = Path::new(program);
    if p.is_absolute() {
        return check_file(lookups, p.to_path_buf(), Lookup::AbsentAbsolute);
    }
    if program.contains('/') {
        return check_file(lookups, config_dir.join(p), Lookup::AbsentRelative);
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|c| is_executable(lookups, c))
        .map_or_else(|| Lookup::NotInPath(program.to_string()), Lookup::Found)
}

/// Expands `${VAR}` in every argument and checks the program exists.
pub(super) fn argv(
    config: &Config,
    host: &Host,
    owner: &str,
    cmd: &Spanned<Vec<String>>,
    env: &BTreeMap<String, String>,
    env_files_unread: bool,
    diags: &mut Diagnostics,
) -> Vec<String> {
    let out: Vec<String> = cmd
        .get_ref()
        .iter()
        .map(|arg| match expand(arg, env) {
            Ok(a) => a,
            Err(ExpandError::Unset(var)) if env_files_unread => {
                diags.warning(cmd.span(), format!("`${{{var}}}` in the command of `{owner}` is not set here; it must come from an env_file that this check could not read"));
                arg.clone()
            }
            Err(ExpandError::Unset(var)) => {
                diags.error(cmd.span(), format!("`${{{var}}}` in the command of `{owner}` is not set in its environment (set it in `env` or an `env_file`, or write `$$` for a literal `$`)"));
                arg.clone()
            }
            Err(ExpandError::Unclosed) => {
                diags.error(cmd.span(), format!("`{arg}` in the command of `{owner}` opens `${{` without closing `}}`"));
                arg.clone()
            }
        })
        .collect();
    if let Some(program) = cmd.get_ref().first().filter(|p| !p.trim().is_empty()) {
        let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
        match lookup(host.lookups.as_ref(), program, config.dir(), path_var) {
            Lookup::Found(_) => {}
            Lookup::AbsentAbsolute(p) => diags.warning(
                cmd.span(),
                format!("`{}` (the program of `{owner}`) is not on this host; `{owner}` will fail to start until it is installed", p.display()),
            ),
            Lookup::NotExecutable(p) => diags.warning(
                cmd.span(),
                format!("`{}` (the program of `{owner}`) is not an executable file (chmod +x?)", p.display()),
            ),
            Lookup::AbsentRelative(p) => diags.error(
                cmd.span(),
                format!("`{program}` (the program of `{owner}`) is taken relative to the config's folder and is not there: {} does not exist", p.display()),
            ),
            Lookup::NotInPath(name) => diags.error(
                cmd.span(),
                format!("`{name}` (the program of `{owner}`) is in no folder of PATH ({path_var}); give an absolute path"),
            ),
        }
    }
    out
}

/// The account a service or timer runs as: its `user`, or root when it
/// names only a `group` (as systemd's `Group=` without `User=`): the child
/// then keeps uid 0 and takes that group as its gid, its supplementary
/// groups as `initgroups("root", group)` sets them (`sys::spawn`), instead
/// of running as root:root with the group silently ignored.
pub(super) fn run_as(
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
) -> Option<String> {
    match (user, group) {
        (Some(u), _) => Some(u.get_ref().clone()),
        (None, Some(_)) => Some("root".to_string()),
        (None, None) => None,
    }
}

/// A `user` or `group` this host does not have is a warning (the config
/// may be meant for another host).
pub(super) fn owner_exists(
    host: &Host,
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
    owner: &str,
    diags: &mut Diagnostics,
) {
    if let Some(u) = user {
        if !host.lookups.user_exists(u.get_ref()) {
            diags.warning(
                u.span(),
                format!(
                    "user `{}` does not exist on this host; `{owner}` will fail to start",
                    u.get_ref()
                ),
            );
        }
    }
    if let Some(g) = group {
        if !host.lookups.group_exists(g.get_ref()) {
            diags.warning(
                g.span(),
                format!(
                    "group `{}` does not exist on this host; `{owner}` will fail to start",
                    g.get_ref()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::lookups::InMemory;

    #[test]
    fn finds_absolute_relative_and_path_programs() {
        let dir = Path::new("/opt/venus");
        let exe = dir.join("tool");
        let plain = dir.join("data");
        let host = InMemory::new()
            .program(&exe)
            .file(&plain, "")
            .folder("/srv");
        let path_var = format!("/nonexistent:{}", dir.display());

        assert_eq!(
            lookup(&host, exe.to_str().unwrap(), Path::new("/"), ""),
            Lookup::Found(exe.clone())
        );
        assert_eq!(
            lookup(&host, "./tool", dir, ""),
            Lookup::Found(dir.join("./tool"))
        );
        assert_eq!(
            lookup(&host, "tool", Path::new("/"), &path_var),
            Lookup::Found(exe)
        );
        assert!(matches!(
            lookup(&host, "/no/such/venus-worker", Path::new("/"), ""),
            Lookup::AbsentAbsolute(_)
        ));
        assert!(matches!(
            lookup(&host, "./nope", dir, ""),
            Lookup::AbsentRelative(_)
        ));
        assert!(matches!(
            lookup(&host, "nope", Path::new("/"), &path_var),
            Lookup::NotInPath(_)
        ));
        assert!(matches!(
            lookup(&host, plain.to_str().unwrap(), Path::new("/"), ""),
            Lookup::NotExecutable(_)
        ));
        // A folder is no program, whether named or met on PATH.
        assert_eq!(
            lookup(&host, "/srv", Path::new("/"), ""),
            Lookup::NotExecutable(PathBuf::from("/srv"))
        );
        assert!(matches!(
            lookup(&host, "data", Path::new("/"), &path_var),
            Lookup::NotInPath(_)
        ));
    }
}
