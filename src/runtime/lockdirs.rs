//! Creating the GPU lock folders (`TMPDIR` of each GPU lock domain) with
//! their mode and owner before any service starts.

use std::fs;
use std::path::PathBuf;

use crate::plan::gpus::LockDir;

/// Why a lock domain's `TMPDIR` could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LockDirError {
    #[error("failed to create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to give {} to {who}: {source}", path.display())]
    Chown {
        path: PathBuf,
        who: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set the mode of {} to {mode:o}: {source}", path.display())]
    Mode {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot give {} to user `{user}`: no such user or group here", path.display())]
    NoSuchOwner { path: PathBuf, user: String },
}

/// Creates each lock domain's `TMPDIR` (and its parents), gives it to its
/// services' user and sets its mode; an existing folder is set again, so a
/// changed `user` takes effect at the next start.
pub fn create_lock_dirs(dirs: &[LockDir]) -> Vec<LockDirError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut errors = Vec::new();
    for d in dirs {
        let path = d.path.clone();
        if let Err(source) = fs::create_dir_all(&path) {
            errors.push(LockDirError::Create { path, source });
            continue;
        }
        if let Some(user) = &d.user {
            match owner_ids(user, d.group.as_deref()) {
                Some((uid, gid)) => {
                    if let Err(source) = std::os::unix::fs::chown(&path, Some(uid), Some(gid)) {
                        let who = format!("{user} ({uid}:{gid})");
                        errors.push(LockDirError::Chown { path, who, source });
                        continue;
                    }
                }
                None => {
                    let user = user.clone();
                    errors.push(LockDirError::NoSuchOwner { path, user });
                    continue;
                }
            }
        }
        let mode = if d.mixed_users { 0o1777 } else { 0o700 };
        if let Err(source) = fs::set_permissions(&path, fs::Permissions::from_mode(mode)) {
            errors.push(LockDirError::Mode { path, mode, source });
        }
    }
    errors
}

/// The uid of `user` and the gid of `group` (else the user's own group).
fn owner_ids(user: &str, group: Option<&str>) -> Option<(u32, u32)> {
    let a = crate::host::users::account(user, group).ok()?;
    Some((a.uid.as_raw(), a.gid.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::gpus::*;

    #[test]
    fn lock_dirs_are_created_with_their_mode_and_owner() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let root = tempfile::tempdir().unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap();
        let dir = |name: &str, user: Option<String>, mixed_users: bool| LockDir {
            path: root.path().join("state").join(name),
            gpus: vec![0],
            services: vec!["w".into()],
            user,
            group: None,
            mixed_users,
        };
        let dirs = [
            dir("gpu0-tmp", Some(me.name.clone()), false),
            dir("gpu1-tmp", None, true),
        ];
        assert!(create_lock_dirs(&dirs).is_empty());
        let own = fs::metadata(&dirs[0].path).unwrap();
        assert_eq!(
            (own.uid(), own.permissions().mode() & 0o7777),
            (me.uid.as_raw(), 0o700)
        );
        let shared = fs::metadata(&dirs[1].path).unwrap();
        assert_eq!(shared.permissions().mode() & 0o7777, 0o1777);
        // Again: already there is fine.
        assert!(create_lock_dirs(&dirs).is_empty());
        let ghost = [dir("gpu2-tmp", Some("no-such-user-venussup".into()), false)];
        let errors = create_lock_dirs(&ghost);
        assert!(
            errors[0].to_string().contains("no such user"),
            "{}",
            errors[0]
        );
    }
}
