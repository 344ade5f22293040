//! Finding the program a command names, the way `execvp` would, but before
//! anything runs, so a typo is an error in `check` and not a crash loop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn check_file(p: PathBuf, absent: fn(PathBuf) -> Lookup) -> Lookup {
    if !p.exists() {
        absent(p)
    } else if is_executable(&p) {
        Lookup::Found(p)
    } else {
        Lookup::NotExecutable(p)
    }
}

/// Looks `program` up: absolute as is, relative with a `/` from
/// `config_dir`, a bare name in the folders of `path_var`.
pub fn lookup(program: &str, config_dir: &Path, path_var: &str) -> Lookup {
    let p = Path::new(program);
    if p.is_absolute() {
        return check_file(p.to_path_buf(), Lookup::AbsentAbsolute);
    }
    if program.contains('/') {
        return check_file(config_dir.join(p), Lookup::AbsentRelative);
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|c| is_executable(c))
        .map_or_else(|| Lookup::NotInPath(program.to_string()), Lookup::Found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn finds_absolute_relative_and_path_programs() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("data");
        fs::write(&plain, "").unwrap();
        let path_var = format!("/nonexistent:{}", dir.path().display());

        assert_eq!(
            lookup(exe.to_str().unwrap(), Path::new("/"), ""),
            Lookup::Found(exe.clone())
        );
        assert_eq!(
            lookup("./tool", dir.path(), ""),
            Lookup::Found(dir.path().join("./tool"))
        );
        assert_eq!(
            lookup("tool", Path::new("/"), &path_var),
            Lookup::Found(exe)
        );
        assert!(matches!(
            lookup("/no/such/venus-worker", Path::new("/"), ""),
            Lookup::AbsentAbsolute(_)
        ));
        assert!(matches!(
            lookup("./nope", dir.path(), ""),
            Lookup::AbsentRelative(_)
        ));
        assert!(matches!(
            lookup("nope", Path::new("/"), &path_var),
            Lookup::NotInPath(_)
        ));
        assert!(matches!(
            lookup(plain.to_str().unwrap(), Path::new("/"), ""),
            Lookup::NotExecutable(_)
        ));
    }
}
