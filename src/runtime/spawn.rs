//! The one place venussup starts processes. Everything a child gets is
//! decided before the fork; between fork and exec the child only makes
//! syscalls, in this order: its own session (so signals meant for venussup
//! never reach it and its whole process group can be stopped), rlimits,
//! umask, CPU confinement, then groups, gid and uid (last, because raising
//! an rlimit or joining a cgroup needs the privileges it drops). std then
//! resets the signal mask and execs; every descriptor of venussup is
//! close-on-exec, so only stdin, stdout and stderr cross.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{setgid, setgroups, setsid, setuid, Gid, Group, Pid, Uid, User};

use crate::config::values::Limit;

/// Who a child runs as, resolved from names before any fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups, as `initgroups` would set them.
    pub groups: Vec<Gid>,
    pub home: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
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
    #[error("failed to open the log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the command is empty")]
    EmptyCommand,
    #[error("failed to start `{program}`: {source}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// Marks every descriptor venussup inherited (from systemd, a shell, a test
/// harness) close-on-exec, so none crosses into a service. Called once at
/// start, before any thread or child exists.
pub fn close_inherited_on_exec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl(F_GETFD/F_SETFD) on a descriptor number only reads
        // and sets its flags; a number that was the listing's own (now
        // closed) descriptor just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Resolves `user` (and `group`, else the user's primary group) to ids.
pub fn identity(user: &str, group: Option<&str>) -> Result<Identity, SpawnError> {
    fn lookup(name: &str) -> impl FnOnce(nix::Error) -> SpawnError {
        let name = name.to_string();
        move |source| SpawnError::Lookup { name, source }
    }
    let u = User::from_name(user)
        .map_err(lookup(user))?
        .ok_or_else(|| SpawnError::NoSuchUser(user.to_string()))?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)
                .map_err(lookup(g))?
                .ok_or_else(|| SpawnError::NoSuchGroup(g.to_string()))?
                .gid
        }
        None => u.gid,
    };
    let cname = CString::new(user).map_err(|_| SpawnError::NoSuchUser(user.to_string()))?;
    let groups = nix::unistd::getgrouplist(&cname, gid).map_err(lookup(user))?;
    Ok(Identity {
        name: u.name,
        uid: u.uid,
        gid,
        groups,
        home: u.dir,
    })
}

/// Where a child's stdout and stderr go.
#[derive(Debug)]
pub enum Output {
    /// Appended to this file (created 0640 if missing). The child holds the
    /// file itself, so its output survives venussup dying.
    Append(PathBuf),
    /// A pipe venussup reads (timer runs, whose output is classified).
    Pipe,
}

/// Work a child does on itself after fork, before exec (CPU confinement).
/// It must only make async-signal-safe calls.
#[derive(Clone)]
pub struct ChildHook(pub Arc<dyn Fn() -> io::Result<()> + Send + Sync>);

impl std::fmt::Debug for ChildHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildHook")
    }
}

/// Everything a child gets.
pub struct SpawnSpec<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub workdir: Option<&'a Path>,
    pub identity: Option<&'a Identity>,
    pub umask: Option<u32>,
    pub nofile: Option<Limit>,
    pub memlock: Option<Limit>,
    pub output: Output,
    pub hook: Option<ChildHook>,
    /// What the child reads (an event hook's JSON); `/dev/null` if none.
    pub stdin: Option<File>,
}

impl<'a> SpawnSpec<'a> {
    /// A helper venussup runs as itself (a hook, a preparation command):
    /// no user, limits or confinement of its own.
    pub fn helper(
        argv: &'a [String],
        env: &'a BTreeMap<String, String>,
        output: Output,
        stdin: Option<File>,
    ) -> Self {
        Self {
            argv,
            env,
            workdir: None,
            identity: None,
            umask: None,
            nofile: None,
            memlock: None,
            output,
            hook: None,
            stdin,
        }
    }
}

impl std::fmt::Debug for SpawnSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnSpec")
            .field("argv", &self.argv)
            .field("workdir", &self.workdir)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A started child: its pid (also its process group and session id) and,
/// for `Output::Pipe`, the read end of its output.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    pub output: Option<File>,
}

fn rlimit_value(l: Limit) -> u64 {
    match l {
        Limit::Value(v) => v,
        Limit::Unlimited => RLIM_INFINITY,
    }
}

/// Opens a log file for appending, creating it (and its folder) if needed.
pub fn open_log(path: &Path) -> Result<File, SpawnError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| SpawnError::Log {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(err)
}

/// Starts a child as `spec` says.
pub fn spawn(spec: SpawnSpec<'_>) -> Result<Spawned, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear();
    match spec.stdin {
        Some(f) => cmd.stdin(f),
        None => cmd.stdin(Stdio::null()),
    };
    if let Some(id) = spec.identity {
        // What a login would set, unless the config sets it.
        let defaults = [
            ("HOME", id.home.to_string_lossy().into_owned()),
            ("USER", id.name.clone()),
            ("LOGNAME", id.name.clone()),
        ];
        for (k, v) in defaults {
            if !spec.env.contains_key(k) {
                cmd.env(k, v);
            }
        }
    }
    cmd.envs(spec.env);
    if let Some(dir) = spec.workdir {
        cmd.current_dir(dir);
    }
    match &spec.output {
        Output::Append(path) => {
            let log = open_log(path)?;
            let err = log.try_clone().map_err(|source| SpawnError::Log {
                path: path.clone(),
                source,
            })?;
            cmd.stdout(log).stderr(err);
        }
        Output::Pipe => {}
    }
    // One pipe for both streams, so the output reads in the order written.
    let mut reader = None;
    if let Output::Pipe = spec.output {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Exec {
                program: program.clone(),
                source: e.into(),
            })?;
        let write2 = write.try_clone().map_err(|source| SpawnError::Exec {
            program: program.clone(),
            source,
        })?;
        cmd.stdout(write).stderr(write2);
        reader = Some(File::from(read));
    }
    let rlimits: Vec<(Resource, u64)> = [
        (Resource::RLIMIT_NOFILE, spec.nofile),
        (Resource::RLIMIT_MEMLOCK, spec.memlock),
    ]
    .into_iter()
    .filter_map(|(r, l)| l.map(|l| (r, rlimit_value(l))))
    .collect();
    let mask = spec.umask;
    let hook = spec.hook.clone();
    let ids = spec.identity.cloned();
    // The closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called (`hook` follows the rule).
    // SAFETY: it makes plain syscalls (setsid, setrlimit, umask, setgroups,
    // setgid, setuid) on data owned before the fork; no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            setsid()?;
            for &(resource, value) in &rlimits {
                setrlimit(resource, value, value)?;
            }
            if let Some(m) = mask {
                umask(Mode::from_bits_truncate(m));
            }
            if let Some(h) = &hook {
                (h.0)()?;
            }
            if let Some(id) = &ids {
                setgroups(&id.groups)?;
                setgid(id.gid)?;
                setuid(id.uid)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: program.clone(),
        source,
    })?;
    // The write ends of the pipe close with `cmd`, so the reader sees EOF
    // when the child (and whatever inherited them) is done.
    drop(cmd);
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // The child is reaped by the supervisor's waitpid(-1) loop, not by std.
    drop(child);
    Ok(Spawned {
        pid,
        output: reader,
    })
}
