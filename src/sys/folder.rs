//! The folders venussup writes as root (its state folder, the services'
//! log folder, the metrics textfile's folder) are trusted only when nobody
//! else can change what is in them, as OpenSSH's `StrictModes` and
//! systemd's `StateDirectory=` require: the folder and each of its
//! ancestors belong to root (or to venussup's own user) and are not
//! writable by group or others. A sticky world-writable folder such as
//! `/tmp` may be an ancestor (nobody can rename what is not theirs in it),
//! never the folder itself. A link on the way must be root's, and the
//! folders it leads to are checked the same way.
//!
//! One allowance, for Ubuntu's `/var/log` (root:syslog, 0775) above the
//! default log folder: an ancestor of root's that only a *system* group
//! (gid below [`FIRST_USER_GID`], Debian policy's and `login.defs`'
//! `SYS_GID_MAX` + 1) may write is accepted; such groups hold daemons
//! (syslog), not people. Open to others, or to a group of people, it is
//! refused as before; the folder itself is never group-writable.
//!
//! [`judge`] is the rule, pure; [`check`] walks a path with `lstat`;
//! [`ensure`] creates what is missing (parents 0755, the folder with its
//! own mode, all root's) and checks again.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the rule says of one folder on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NotOurs,
    Writable,
    StickyShared,
    NotAFolder,
}

impl Problem {
    fn said(self) -> &'static str {
        match self {
            Problem::NotOurs => "is not owned by root",
            Problem::Writable => "is writable by group or others",
            Problem::StickyShared => {
                "is a shared sticky folder (like /tmp): fine above venussup's folder, not as the folder itself"
            }
            Problem::NotAFolder => "is not a folder",
        }
    }
}

/// The first gid of a group of people; below it, system groups.
pub const FIRST_USER_GID: u32 = 1000;

/// The rule for one folder on the way (`last`: the folder itself), owned
/// by `uid`:`gid` with `mode` (`st_mode`, type bits included); `me` is
/// venussup's effective uid.
pub fn judge(uid: u32, gid: u32, mode: u32, me: u32, last: bool) -> Option<Problem> {
    let kind = mode & libc::S_IFMT;
    let sticky = mode & libc::S_ISVTX != 0;
    if kind != libc::S_IFDIR {
        return Some(Problem::NotAFolder);
    }
    if uid != 0 && uid != me {
        return Some(Problem::NotOurs);
    }
    let system_group_only = mode & 0o022 == 0o020 && gid < FIRST_USER_GID && uid == 0;
    if !last && system_group_only {
        return None;
    }
    if mode & 0o022 != 0 {
        return Some(match (sticky, last) {
            (true, false) => return None,
            (true, true) => Problem::StickyShared,
            _ => Problem::Writable,
        });
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The folder, where the rule fails, its owner and mode, and what to do.
    #[error("{0}")]
    Untrusted(String),
    #[error("failed to {action} {what} {path}: {source}")]
    Io {
        action: &'static str,
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

struct Walk<'a> {
    what: &'a str,
    folder: &'a Path,
    me: u32,
}

impl Walk<'_> {
    fn io(&self, action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FolderError {
        let (what, path) = (self.what.to_string(), path.to_path_buf());
        move |source| FolderError::Io {
            action,
            what,
            path,
            source,
        }
    }

    fn refuse(
        &self,
        problem: Problem,
        path: &Path,
        meta: &std::fs::Metadata,
        itself: bool,
    ) -> FolderError {
        let mode = meta.mode() & 0o7777;
        let p = path.display();
        let subject = if meta.file_type().is_symlink() {
            format!("the link {p} on its way")
        } else if itself && path == self.folder {
            "it".to_string()
        } else if itself {
            format!("it (really {p})")
        } else {
            format!("its ancestor {p}")
        };
        let fix = match problem {
            _ if meta.file_type().is_symlink() => format!("Make the link root's (chown -h root {p}) or name the folder without it."),
            Problem::NotOurs if itself => format!("Give it to root and close it to others (chown root:root {p} && chmod 0700 {p}), or choose a folder root owns (e.g. under /var/lib or /var/log)."),
            Problem::Writable if itself => format!("Close it to others (chmod go-w {p}; venussup itself makes its folders 0700 or 0750), or choose another folder."),
            Problem::StickyShared => format!("Name a folder inside it instead (e.g. {p}/venussup): venussup creates it 0700, root's."),
            Problem::NotAFolder => "Remove it or choose another path.".to_string(),
            _ => format!("Fix that folder (chown root {p}; chmod go-w {p}) or choose a folder whose every parent is root's and closed to others (e.g. under /var/lib or /var/log)."),
        };
        FolderError::Untrusted(format!(
            "{what} {folder}: {subject} {problem} (owner {owner}, mode {mode:04o}); venussup runs as root and would follow links others plant there. {fix}",
            problem = problem.said(),
            what = self.what,
            folder = self.folder.display(),
            owner = owner_name(meta.uid()),
        ))
    }

    fn judge_folder(&self, path: &Path, last: bool) -> Result<(), FolderError> {
        let meta = std::fs::metadata(path).map_err(self.io("read", path))?;
        match judge(meta.uid(), meta.gid(), meta.mode(), self.me, last) {
            Some(p) => Err(self.refuse(p, path, &meta, last)),
            None => Ok(()),
        }
    }

    /// Every folder of `real` (no links in it) from `/`.
    fn judge_chain(&self, real: &Path, last: bool) -> Result<(), FolderError> {
        let mut ancestors: Vec<&Path> = real.ancestors().collect();
        ancestors.reverse();
        let n = ancestors.len();
        for (i, a) in ancestors.into_iter().enumerate() {
            self.judge_folder(a, last && i + 1 == n)?;
        }
        Ok(())
    }
}

/// Checks the part of `folder` that exists: `Ok(true)` when the folder
/// itself exists (and is trusted), `Ok(false)` when some of it is still
/// to be made (what exists on the way is trusted).
pub fn check(what: &str, folder: &Path) -> Result<bool, FolderError> {
    let me = nix::unistd::geteuid().as_raw();
    let abs = absolute(folder).map_err(|source| FolderError::Io {
        action: "find",
        what: what.to_string(),
        path: folder.to_path_buf(),
        source,
    })?;
    let walk = Walk {
        what,
        folder: &abs,
        me,
    };
    walk.judge_folder(Path::new("/"), abs == Path::new("/"))?;
    let parts: Vec<_> = abs.components().skip(1).collect();
    let mut done = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next = done.join(part);
        let meta = match std::fs::symlink_metadata(&next) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            other => other.map_err(walk.io("read", &next))?,
        };
        if meta.file_type().is_symlink() {
            if meta.uid() != 0 && meta.uid() != me {
                return Err(walk.refuse(Problem::NotOurs, &next, &meta, false));
            }
            done = match std::fs::canonicalize(&next) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                other => other.map_err(walk.io("resolve", &next))?,
            };
            walk.judge_chain(&done, last)?;
        } else {
            done = next;
            walk.judge_folder(&done, last)?;
        }
    }
    Ok(true)
}

/// Makes `folder` (mode `mode`, root's, parents 0755) when missing, and
/// checks it and its ancestors. An existing folder keeps its mode.
pub fn ensure(what: &str, folder: &Path, mode: u32) -> Result<(), FolderError> {
    if check(what, folder)? {
        return Ok(());
    }
    let io = |action, source| FolderError::Io {
        action,
        what: what.to_string(),
        path: folder.to_path_buf(),
        source,
    };
    if let Some(parent) = folder.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| io("create", e))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(folder) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io("create", e)),
        _ => {}
    }
    // The umask may have taken bits away; the mode is venussup's.
    std::fs::set_permissions(folder, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| io("set the mode of", e))?;
    check(what, folder)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    const DIR: u32 = libc::S_IFDIR;

    #[test]
    fn the_rule_is_openssh_strict_modes() {
        assert_eq!(judge(0, 0, DIR | 0o700, 0, true), None);
        assert_eq!(judge(0, 0, DIR | 0o755, 0, false), None);
        assert_eq!(judge(0, 0, DIR | 0o750, 0, true), None);
        assert_eq!(judge(1000, 0, DIR | 0o700, 0, true), Some(Problem::NotOurs));
        assert_eq!(
            judge(1000, 0, DIR | 0o700, 1000, true),
            None,
            "venussup's own user"
        );
        assert_eq!(judge(0, 0, DIR | 0o770, 0, true), Some(Problem::Writable));
        // Ubuntu's /var/log, root:syslog 0775, above the log folder.
        assert_eq!(judge(0, 4, DIR | 0o775, 0, false), None);
        assert_eq!(judge(0, 4, DIR | 0o775, 0, true), Some(Problem::Writable));
        assert_eq!(
            judge(0, 1001, DIR | 0o775, 0, false),
            Some(Problem::Writable),
            "a group of people"
        );
        assert_eq!(judge(0, 0, DIR | 0o757, 0, false), Some(Problem::Writable));
        assert_eq!(judge(0, 0, DIR | 0o1777, 0, false), None, "/tmp above");
        assert_eq!(
            judge(0, 0, DIR | 0o1777, 0, true),
            Some(Problem::StickyShared)
        );
        assert_eq!(
            judge(0, 0, libc::S_IFREG | 0o600, 0, true),
            Some(Problem::NotAFolder)
        );
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn ensure_makes_a_closed_folder_and_refuses_an_open_one() {
        let top = tempfile::tempdir().unwrap();
        let state = top.path().join("a/b/state");
        ensure("state folder", &state, 0o700).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&top.path().join("a")), 0o755);
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure("state folder", &state, 0o700)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is writable by group or others"), "{err}");
        assert!(
            err.contains(&state.display().to_string()) && err.contains("0777"),
            "{err}"
        );
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(top.path().join("a"), fs::Permissions::from_mode(0o775)).unwrap();
        std::os::unix::fs::chown(top.path().join("a"), None, Some(65534)).unwrap();
        let err = check("log folder", &state).unwrap_err().to_string();
        assert!(
            err.contains("its ancestor") && err.contains("is writable"),
            "{err}"
        );
        // A folder that is not there yet is checked as far as it exists.
        fs::set_permissions(top.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!check("log folder", &top.path().join("a/new/logs")).unwrap());
        let err = check("state folder", Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sticky"), "{err}");
    }

    #[test]
    fn a_folder_not_ours_or_reached_through_a_foreign_link_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let theirs = top.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = check("state folder", &theirs).unwrap_err().to_string();
        assert!(
            err.contains("is not owned by root") && err.contains("65534"),
            "{err}"
        );
        // A root link to a good folder is fine; one to an open folder is not.
        let good = top.path().join("good");
        fs::create_dir(&good).unwrap();
        symlink(&good, top.path().join("via")).unwrap();
        assert!(check("state folder", &top.path().join("via")).unwrap());
        let open = top.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        symlink(&open, top.path().join("via-open")).unwrap();
        assert!(check("state folder", &top.path().join("via-open/state")).is_err());
        std::os::unix::fs::lchown(top.path().join("via"), Some(65534), Some(65534)).unwrap();
        let err = check("state folder", &top.path().join("via"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("on its way") && err.contains("chown -h root"),
            "{err}"
        );
    }
}
