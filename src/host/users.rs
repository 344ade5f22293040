//! Users and groups by name, as the C library has them: the one place a
//! name becomes a uid or gid. Read-only; `plan` asks through
//! [`crate::host::Lookups`], the runtime and `sys::spawn` call it directly.
//!
//! The same calls serve both builds: glibc's (`cargo build --release`) asks
//! NSS (`/etc/passwd`, LDAP, SSSD, ...); the static release build links musl,
//! which reads `/etc/passwd` and `/etc/group` itself (and asks `nscd` when
//! one runs), so it needs no NSS module loaded at run time.

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

/// A user, with the gid it runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    /// The named group's, else the user's primary group.
    pub gid: Gid,
    pub home: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user `{0}` does not exist on this host")]
    NoSuchUser(String),
    #[error("group `{0}` does not exist on this host")]
    NoSuchGroup(String),
    #[error("failed to look up user or group `{name}`: {source}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Resolves `user`, and `group` (else the user's primary group).
pub fn account(user: &str, group: Option<&str>) -> Result<Account, AccountError> {
    fn failed(name: &str) -> impl FnOnce(nix::Error) -> AccountError {
        let name = name.to_string();
        move |source| AccountError::Lookup { name, source }
    }
    let u = User::from_name(user)
        .map_err(failed(user))?
        .ok_or_else(|| AccountError::NoSuchUser(user.to_string()))?;
    let gid = match group {
        Some(g) => group_id(g)
            .map_err(failed(g))?
            .ok_or_else(|| AccountError::NoSuchGroup(g.to_string()))?,
        None => u.gid,
    };
    Ok(Account {
        name: u.name,
        uid: u.uid,
        gid,
        home: u.dir,
    })
}

/// The gid of group `name`; `Ok(None)` when there is no such group.
pub fn group_id(name: &str) -> Result<Option<Gid>, nix::Error> {
    Group::from_name(name).map(|g| g.map(|g| g.gid))
}

/// Whether user `name` exists (a failed lookup counts as no).
pub fn user_exists(name: &str) -> bool {
    matches!(User::from_name(name), Ok(Some(_)))
}

/// Whether group `name` exists (a failed lookup counts as no).
pub fn group_exists(name: &str) -> bool {
    matches!(group_id(name), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_a_made_up_name_does_not() {
        let root = account("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (Uid::from_raw(0), Gid::from_raw(0)));
        assert!(user_exists("root"));
        assert!(group_exists("root"));
        assert_eq!(group_id("root").unwrap(), Some(Gid::from_raw(0)));
        assert!(!user_exists("no-such-user-venussup"));
        assert!(!group_exists("no-such-group-venussup"));
        assert!(matches!(
            account("no-such-user-venussup", None),
            Err(AccountError::NoSuchUser(_))
        ));
        assert!(matches!(
            account("root", Some("no-such-group-venussup")),
            Err(AccountError::NoSuchGroup(_))
        ));
    }

    /// Every account and group in the files resolves to what the files say,
    /// whichever C library this is built with (the static musl build reads
    /// the files itself; a static glibc would need its NSS modules at run time).
    #[test]
    fn every_local_user_and_group_resolves_as_the_files_say() {
        let fields = |path: &str| -> Vec<Vec<String>> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with(['#', '+', '-']))
                .map(|l| l.split(':').map(str::to_string).collect())
                .collect()
        };
        let groups = fields("/etc/group");
        let passwd = fields("/etc/passwd");
        assert!(passwd.len() > 1, "{passwd:?}");
        for u in &passwd {
            let a = account(&u[0], None).unwrap();
            assert_eq!(a.uid.as_raw().to_string(), u[2], "{u:?}");
            assert_eq!(a.gid.as_raw().to_string(), u[3], "{u:?}");
            assert_eq!(a.home, PathBuf::from(&u[5]), "{u:?}");
        }
        for g in &groups {
            assert_eq!(
                group_id(&g[0]).unwrap().map(|g| g.as_raw().to_string()),
                Some(g[2].clone()),
                "{g:?}"
            );
            // Supplementary groups come from the same file (`sys::spawn`).
            for member in g[3].split(',').filter(|m| user_exists(m)) {
                let a = account(member, None).unwrap();
                let c = std::ffi::CString::new(member).unwrap();
                let list = nix::unistd::getgrouplist(&c, a.gid).unwrap();
                assert!(
                    list.iter().any(|x| x.as_raw().to_string() == g[2]),
                    "{member} in {g:?}: {list:?}"
                );
            }
        }
    }
}
