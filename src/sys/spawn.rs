//! The one place venussup starts processes. Everything a child gets is
//! decided before the clone; between clone and exec the child only makes
//! syscalls, in this order: every signal disposition back to its default
//! (handled and ignored ones alike), stdin, stdout
//! and stderr, working folder, its own session (so signals meant for
//! venussup never reach it and its whole process group can be stopped),
//! rlimits, `oom_score_adj`, umask, CPU confinement, then groups, gid and
//! uid (last, because raising an rlimit, lowering `oom_score_adj` or
//! joining a cgroup needs the privileges it drops), then an empty signal
//! mask and exec.
//!
//! `oom_score_adj` is inherited across fork and exec, and venussup runs at
//! -1000 under its unit (the OOM killer never picks the supervisor): each
//! child sets its own (0 unless configured) by writing the value, made
//! into bytes before the clone, to `/proc/self/oom_score_adj`, which in
//! the child is the child's. The write is skipped when the value is
//! venussup's own. Every descriptor of venussup is
//! close-on-exec, so only stdin, stdout and stderr cross.
//!
//! A child with a cgroup v2 ([`CgroupTarget`]) is born in it with
//! `clone3(CLONE_INTO_CGROUP)` (`sys::clone3`): nothing migrates. Where
//! the kernel lacks it (before 5.7, or a seccomp filter refuses clone3),
//! said once in the log, or the call is refused for that cgroup, the child
//! joins it itself by writing `0` to its `cgroup.procs`, before its
//! confinement hook.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use nix::sched::CloneFlags;
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{setgid, setgroups, setsid, setuid, Gid, Pid, Uid};

use tracing::{info, warn};

use super::clone3;
use crate::host::users::{self, AccountError};
use crate::util::units::Limit;

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
    #[error(transparent)]
    Account(#[from] AccountError),
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
    #[error("failed to set oom_score_adj {value} for `{program}`: {source}")]
    OomScoreAdj {
        program: String,
        value: i32,
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
    let account = users::account(user, group)?;
    let cname = CString::new(user).map_err(|_| AccountError::NoSuchUser(user.to_string()))?;
    let groups =
        nix::unistd::getgrouplist(&cname, account.gid).map_err(|source| AccountError::Lookup {
            name: user.to_string(),
            source,
        })?;
    Ok(Identity {
        name: account.name,
        uid: account.uid,
        gid: account.gid,
        groups,
        home: account.home,
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

/// The cgroup v2 a child is born in: its directory (for `CLONE_INTO_CGROUP`)
/// and its `cgroup.procs` (for the join where that is not offered), both
/// opened ahead of time.
#[derive(Debug, Clone, Copy)]
pub struct CgroupTarget<'a> {
    pub dir: BorrowedFd<'a>,
    pub procs: BorrowedFd<'a>,
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
    /// The cgroup v2 it starts in, if any.
    pub cgroup: Option<CgroupTarget<'a>>,
    /// What the child reads (an event hook's JSON); `/dev/null` if none.
    pub stdin: Option<File>,
    /// Its `oom_score_adj` (-1000 to 1000); `None` keeps venussup's own.
    pub oom_score_adj: Option<i32>,
}

impl<'a> SpawnSpec<'a> {
    /// A helper venussup runs as itself (a hook, a preparation command):
    /// no user, limits or confinement of its own; `oom_score_adj` 0, like
    /// any process the supervisor's -1000 should not protect.
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
            cgroup: None,
            stdin,
            oom_score_adj: Some(0),
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
    /// It was born in its cgroup (`CLONE_INTO_CGROUP`), not moved there.
    pub born_in_cgroup: bool,
}

fn rlimit_value(l: Limit) -> u64 {
    match l {
        Limit::Value(v) => v,
        Limit::Unlimited => RLIM_INFINITY,
    }
}

/// Opens a log file for appending, creating it (and its folder) if needed.
/// The folder is only made when the open says it is missing: a restart
/// opens an existing log with one syscall.
pub fn open_log(path: &Path) -> Result<File, SpawnError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| SpawnError::Log {
        path: path.to_path_buf(),
        source,
    };
    // Through the folder's descriptor, never through a link, and never a
    // file with another name (super::safefs): root opens it.
    let (dir, name) = super::safefs::split(path).map_err(err)?;
    let open = || super::safefs::Dir::open(dir).and_then(|d| d.open_append(name, 0o640));
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(err)?;
            open().map_err(err)
        }
        opened => opened.map_err(err),
    }
}

/// The file names a program without `/` may be at, in `PATH` order (the
/// service's own `PATH`, as `execvp` in the child would search it).
fn candidates(program: &str, env: &BTreeMap<String, String>) -> Result<Vec<CString>, io::Error> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    if program.contains('/') {
        return Ok(vec![CString::new(program).map_err(invalid)?]);
    }
    // glibc's default when there is no PATH (confstr _CS_PATH).
    let path = env.get("PATH").map_or("/bin:/usr/bin", String::as_str);
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            CString::new(format!("{dir}/{program}")).map_err(invalid)
        })
        .collect()
}

/// A null-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A descriptor numbered 3 or above (close-on-exec), so that putting the
/// child's stdin, stdout and stderr in place never overwrites another.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let dup = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// `clone3` into a cgroup is not offered here (see [`clone3::unsupported`]);
/// learned at the first try and said once.
static CLONE3_UNSUPPORTED: AtomicBool = AtomicBool::new(false);
/// Makes every confined child join its cgroup through `cgroup.procs`, as
/// on a kernel without `CLONE_INTO_CGROUP`: for measuring what it saves
/// (`VENUSSUP_NO_CLONE_INTO_CGROUP=1`, see BENCHMARKS.md).
pub fn without_clone_into_cgroup() {
    CLONE3_UNSUPPORTED.store(true, Ordering::Relaxed);
}

/// A refusal of `clone3` into one cgroup has been logged.
static CLONE3_REFUSED_TOLD: AtomicBool = AtomicBool::new(false);

/// venussup's own `oom_score_adj`, read once: a child that wants the same
/// value needs no write.
fn own_oom_score_adj() -> Option<i32> {
    static OWN: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

/// The decimal text of an `oom_score_adj` value, in a buffer the child
/// writes as it is (no formatting, no allocation after the clone).
#[derive(Clone, Copy)]
struct OomValue {
    text: [u8; 8],
    len: usize,
}

impl OomValue {
    fn new(value: i32) -> Self {
        let mut text = [0u8; 8];
        let s = value.clamp(-1000, 1000).to_string();
        text[..s.len()].copy_from_slice(s.as_bytes());
        Self { text, len: s.len() }
    }

    fn bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// The child's stack: `clone` with `CLONE_VM` runs the child in venussup's
/// memory, on a stack of its own, with a guard page below it.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// The child only makes syscalls (and the confinement hook's); 256 KiB
    /// is many times what it uses.
    const LEN: usize = 256 * 1024;
    const GUARD: usize = 4096;

    fn new() -> io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address the kernel
        // picks; nothing else refers to it until it is returned.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self {
            base,
            len: Self::LEN,
        };
        // SAFETY: the first page of the mapping made above; a child that
        // overflows its stack faults there instead of writing venussup's
        // memory.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    fn usable(&mut self) -> &mut [u8] {
        // SAFETY: the mapping above the guard page is readable, writable,
        // `len - GUARD` bytes long and owned by `self` alone.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.cast::<u8>().add(Self::GUARD),
                self.len - Self::GUARD,
            )
        }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; the child that used
        // it has exec'd or exited (CLONE_VFORK) before this runs.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Everything the child needs, made before the clone: between clone and
/// exec the child only reads it and makes syscalls.
#[derive(Clone, Copy)]
struct ChildPlan<'a> {
    programs: &'a [CString],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    stdio: [RawFd; 3],
    workdir: Option<&'a CString>,
    rlimits: &'a [(Resource, u64)],
    /// The `oom_score_adj` to write, when it differs from venussup's own;
    /// the child sets `oom_failed` when the write fails.
    oom: Option<OomValue>,
    oom_failed: &'a AtomicBool,
    umask: Option<u32>,
    /// A cgroup's `cgroup.procs` the child writes itself to (it was not
    /// born in that cgroup).
    join: Option<RawFd>,
    hook: Option<&'a ChildHook>,
    identity: Option<&'a Identity>,
}

/// The highest signal number of the kernel (`_NSIG - 1`).
const KERNEL_SIGMAX: libc::c_int = 64;

/// Runs in the child, in venussup's memory (CLONE_VM) while venussup waits
/// (CLONE_VFORK): no allocation, no lock, nothing but syscalls on data
/// made before the clone. Returns only on failure, with the errno.
fn child_exec(p: &ChildPlan<'_>) -> i32 {
    let errno = |e: nix::Error| e as i32;
    // Every disposition goes back to its default: venussup's handlers must
    // not run here (they would run on venussup's memory), and a signal
    // ignored by whoever started venussup (`nohup`'s SIGHUP, a shell's
    // SIGQUIT, the Rust runtime's SIGPIPE) must not stay ignored in the
    // service. Every signal is blocked until just before exec.
    //
    // Through the raw system call, not libc's `sigaction`: glibc refuses
    // its two reserved signals (32 and 33), which an ignoring parent can
    // leave ignored all the same. All zeros is the default disposition
    // with no flags and an empty mask, whatever the kernel struct's
    // field order; 32 bytes hold it on every 64-bit architecture.
    let dfl = [0u64; 4];
    for sig in 1..=KERNEL_SIGMAX {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads the zeroed buffer above (a kernel
        // signal set is 8 bytes) and changes one signal's disposition in
        // this child only (no CLONE_SIGHAND: it has its own table).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            )
        };
    }
    for (target, &fd) in p.stdio.iter().enumerate() {
        // Sources are 3 or above (`above_stdio`): dup2 never overwrites one,
        // and it clears close-on-exec on the copy.
        let target = i32::try_from(target).unwrap_or(0);
        // SAFETY: dup2 on two descriptor numbers only changes the child's
        // descriptor table (CLONE_VM shares memory, not descriptors).
        if unsafe { libc::dup2(fd, target) } < 0 {
            return io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
        }
    }
    if let Some(dir) = p.workdir {
        // SAFETY: a NUL-terminated path made before the clone.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            return io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
        }
    }
    if let Err(e) = setsid() {
        return errno(e);
    }
    for &(resource, value) in p.rlimits {
        if let Err(e) = setrlimit(resource, value, value) {
            return errno(e);
        }
    }
    if let Some(oom) = &p.oom {
        if let Err(e) = write_oom_score_adj(oom.bytes()) {
            p.oom_failed.store(true, Ordering::Relaxed);
            return e;
        }
    }
    if let Some(m) = p.umask {
        umask(Mode::from_bits_truncate(m));
    }
    if let Some(fd) = p.join {
        // SAFETY: a descriptor opened before the clone and alive until the
        // parent resumes; a one-byte buffer of static data.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
        }
    }
    if let Some(h) = p.hook {
        if let Err(e) = (h.0)() {
            return e.raw_os_error().unwrap_or(libc::EIO);
        }
    }
    if let Some(id) = p.identity {
        if let Err(e) = setgroups(&id.groups)
            .and_then(|()| setgid(id.gid))
            .and_then(|()| setuid(id.uid))
        {
            return errno(e);
        }
    }
    // SAFETY: an empty set; SIG_SETMASK only changes this thread's mask.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    // As execvp: the next PATH entry after one that is missing or not
    // ours to run; EACCES if any was found but not executable.
    let mut err = libc::ENOENT;
    let mut denied = false;
    for program in p.programs {
        // SAFETY: program, argv and envp are NUL-terminated strings and
        // null-terminated pointer arrays made before the clone, alive until
        // the parent resumes (after this exec or exit).
        unsafe { libc::execve(program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr()) };
        err = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        match err {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ENOTDIR => {}
            _ => return err,
        }
    }
    if denied {
        libc::EACCES
    } else {
        err
    }
}

/// Writes `value` to the calling process's `/proc/self/oom_score_adj`
/// (the child's own: `/proc/self` is whoever opens it); the errno on
/// failure. Only syscalls on a static path and a buffer made before the
/// clone.
fn write_oom_score_adj(value: &[u8]) -> Result<(), i32> {
    let last = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let path = c"/proc/self/oom_score_adj";
    // SAFETY: a NUL-terminated static path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: writes `value.len()` bytes from a live buffer to the
    // descriptor opened above.
    let written = unsafe { libc::write(fd, value.as_ptr().cast(), value.len()) };
    let result = if usize::try_from(written).ok() == Some(value.len()) {
        Ok(())
    } else {
        Err(last())
    };
    // SAFETY: closes the descriptor opened above, which nothing else uses.
    unsafe { libc::close(fd) };
    result
}

/// Starts a child as `spec` says, and returns once it has exec'd.
///
/// The child is made with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn`
/// does, not with `fork`: it runs in venussup's memory until exec, so no
/// page table is copied and no page is copied on write, which a fork of
/// venussup costs on every restart. Everything it gets is made before the
/// clone; in between, the child only makes syscalls.
pub fn spawn(spec: SpawnSpec<'_>) -> Result<Spawned, SpawnError> {
    let (program, _) = spec.argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let exec_err = |source: io::Error| SpawnError::Exec {
        program: program.clone(),
        source,
    };
    let invalid = |_| exec_err(io::Error::from(io::ErrorKind::InvalidInput));
    let programs = candidates(program, spec.env).map_err(exec_err)?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    let mut env: BTreeMap<&str, String> = BTreeMap::new();
    if let Some(id) = spec.identity {
        // What a login would set, unless the config sets it.
        env.insert("HOME", id.home.to_string_lossy().into_owned());
        env.insert("USER", id.name.clone());
        env.insert("LOGNAME", id.name.clone());
    }
    for (k, v) in spec.env {
        env.insert(k, v.clone());
    }
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    let workdir = spec
        .workdir
        .map(|d| CString::new(d.as_os_str().as_bytes()))
        .transpose()
        .map_err(invalid)?;
    let stdin = match spec.stdin {
        Some(f) => Ok(f),
        None => File::open("/dev/null"),
    }
    .map(OwnedFd::from)
    .and_then(above_stdio)
    .map_err(exec_err)?;
    let (out, reader) = match &spec.output {
        Output::Append(path) => {
            let log = open_log(path).map(OwnedFd::from)?;
            let log = above_stdio(log).map_err(|source| SpawnError::Log {
                path: path.clone(),
                source,
            })?;
            (log, None)
        }
        // One pipe for both streams, so the output reads in the order written.
        Output::Pipe => {
            let (read, write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| exec_err(e.into()))?;
            (
                above_stdio(write).map_err(exec_err)?,
                Some(File::from(read)),
            )
        }
    };
    let rlimits: Vec<(Resource, u64)> = [
        (Resource::RLIMIT_NOFILE, spec.nofile),
        (Resource::RLIMIT_MEMLOCK, spec.memlock),
    ]
    .into_iter()
    .filter_map(|(r, l)| l.map(|l| (r, rlimit_value(l))))
    .collect();
    let argv_ptrs = pointers(&argv);
    let envp_ptrs = pointers(&envp);
    let oom_failed = AtomicBool::new(false);
    let oom = spec
        .oom_score_adj
        .filter(|v| own_oom_score_adj() != Some(*v))
        .map(OomValue::new);
    let plan = ChildPlan {
        programs: &programs,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        stdio: [stdin.as_raw_fd(), out.as_raw_fd(), out.as_raw_fd()],
        workdir: workdir.as_ref(),
        rlimits: &rlimits,
        oom,
        oom_failed: &oom_failed,
        umask: spec.umask,
        join: spec.cgroup.map(|c| c.procs.as_raw_fd()),
        hook: spec.hook.as_ref(),
        identity: spec.identity,
    };
    let mut stack = ChildStack::new().map_err(exec_err)?;
    // The child writes its errno here when it cannot exec; venussup reads
    // it once the child is gone (CLONE_VFORK).
    let failed = AtomicI32::new(0);
    let run = |p: &ChildPlan<'_>| -> i32 {
        let e = child_exec(p);
        failed.store(e, Ordering::Relaxed);
        // SAFETY: _exit ends the child at once, running nothing of
        // venussup's (no atexit handler, no buffer flush).
        unsafe { libc::_exit(127) }
    };
    // No signal handler may run in the child before it has reset them.
    let old_mask = SigSet::all()
        .thread_swap_mask(SigmaskHow::SIG_SETMASK)
        .map_err(|e| exec_err(e.into()))?;
    let mut born_in_cgroup = false;
    let mut cloned = Err(nix::errno::Errno::ENOSYS);
    if let Some(target) = spec
        .cgroup
        .filter(|_| !CLONE3_UNSUPPORTED.load(Ordering::Relaxed))
    {
        let direct = ChildPlan { join: None, ..plan };
        let mut child = || run(&direct);
        // SAFETY: as for the clone below: the child allocates nothing,
        // takes no lock, runs no signal handler (all blocked here), ends in
        // exec or _exit; the stack's end is page-aligned.
        cloned = unsafe {
            clone3::clone_into_cgroup(stack.usable(), target.dir.as_raw_fd(), &mut child)
        };
        match cloned {
            Ok(_) => born_in_cgroup = true,
            Err(e) if clone3::unsupported(e) => {
                if !CLONE3_UNSUPPORTED.swap(true, Ordering::Relaxed) {
                    info!("clone3 with CLONE_INTO_CGROUP is not available here ({e}): each confined child joins its cgroup through cgroup.procs, which waits for an RCU grace period on every start (Linux 5.7 or newer avoids it)");
                }
            }
            Err(e) => {
                if !CLONE3_REFUSED_TOLD.swap(true, Ordering::Relaxed) {
                    warn!("clone3 into a cgroup was refused ({e}); the child joins it through cgroup.procs instead");
                }
            }
        }
    }
    if !born_in_cgroup {
        // CLONE_VM | CLONE_VFORK as posix_spawn uses it: the child runs
        // `child_exec` on its own stack in this process's memory while
        // this thread is suspended until the child execs or exits. What
        // the child reads (`plan` and what it points to) is owned by this
        // suspended frame, so nothing changes it meanwhile.
        let callback = Box::new(|| run(&plan) as isize);
        // SAFETY: the child allocates nothing, takes no lock, runs no
        // signal handler (all blocked here, reset to default in it), ends
        // in exec/_exit.
        cloned = unsafe {
            nix::sched::clone(
                callback,
                stack.usable(),
                CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
                Some(libc::SIGCHLD),
            )
        };
    }
    let _ = old_mask.thread_set_mask();
    let pid = cloned.map_err(|e| exec_err(e.into()))?;
    let errno = failed.load(Ordering::Relaxed);
    if errno != 0 {
        // It has exited: reap it here, so the loop never sees a service
        // that did not start as an orphan.
        let _ = nix::sys::wait::waitpid(pid, None);
        let source = io::Error::from_raw_os_error(errno);
        if oom_failed.load(Ordering::Relaxed) {
            return Err(SpawnError::OomScoreAdj {
                program: program.clone(),
                value: spec.oom_score_adj.unwrap_or_default(),
                source,
            });
        }
        return Err(exec_err(source));
    }
    // The write end of the pipe closes here, so the reader sees EOF when
    // the child (and whatever inherited it) is done.
    drop(out);
    drop(stdin);
    Ok(Spawned {
        pid,
        output: reader,
        born_in_cgroup,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd as _;

    fn env(path: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("PATH".to_string(), path.to_string())])
    }

    fn spec<'a>(argv: &'a [String], env: &'a BTreeMap<String, String>) -> SpawnSpec<'a> {
        SpawnSpec::helper(argv, env, Output::Pipe, None)
    }

    /// Runs `argv` with its output piped; what it printed and its exit.
    fn run(argv: &[&str], env: &BTreeMap<String, String>) -> (String, WaitStatus) {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let child = spawn(spec(&argv, env)).unwrap();
        let mut out = String::new();
        child.output.unwrap().read_to_string(&mut out).unwrap();
        (out, nix::sys::wait::waitpid(child.pid, None).unwrap())
    }

    use nix::sys::wait::WaitStatus;

    /// A fresh cgroup v2 of this test's own, where the host has a writable
    /// cgroup2 mount (root); `None` (and a note) elsewhere.
    fn cgroup_v2_dir(tag: &str) -> Option<PathBuf> {
        let table = std::fs::read_to_string(crate::util::mountinfo::MOUNTINFO).ok()?;
        let mount = crate::util::mountinfo::parse(&table)
            .into_iter()
            .find(|m| m.fstype == "cgroup2")?;
        let dir =
            Path::new(&mount.point).join(format!("venussup-test-{tag}-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                eprintln!("SKIPPED: no writable cgroup2 mount ({e})");
                None
            }
        }
    }

    /// Runs `cat /proc/self/cgroup` in `dir`; its cgroup v2 line and whether
    /// it was born there.
    fn cgroup_of_child_in(dir: &Path) -> (String, bool) {
        let fs = crate::sys::cgroup::Cgroupfs::real();
        let (dir_fd, procs) = (fs.open_dir(dir).unwrap(), fs.open_procs(dir).unwrap());
        let argv = vec!["/bin/cat".to_string(), "/proc/self/cgroup".to_string()];
        let env = env("/usr/bin:/bin");
        let mut s = spec(&argv, &env);
        s.cgroup = Some(CgroupTarget {
            dir: dir_fd.as_fd(),
            procs: procs.as_fd(),
        });
        let child = spawn(s).unwrap();
        let mut out = String::new();
        child.output.unwrap().read_to_string(&mut out).unwrap();
        nix::sys::wait::waitpid(child.pid, None).unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or_default();
        (line.to_string(), child.born_in_cgroup)
    }

    #[test]
    fn a_child_is_born_in_its_cgroup_v2_or_joins_it_where_clone3_is_not_offered() {
        let Some(dir) = cgroup_v2_dir("clone3") else {
            return;
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (line, born) = cgroup_of_child_in(&dir);
        // Where clone3 is not offered, the child writes itself to cgroup.procs.
        CLONE3_UNSUPPORTED.store(true, Ordering::Relaxed);
        let (joined_line, joined_born) = cgroup_of_child_in(&dir);
        CLONE3_UNSUPPORTED.store(false, Ordering::Relaxed);
        std::fs::remove_dir(&dir).unwrap();
        let expected = format!("0::/{name}");
        assert_eq!(line, expected);
        // This kernel (5.7 or newer) offers CLONE_INTO_CGROUP.
        assert!(born, "the child was moved, not born in its cgroup");
        assert_eq!(joined_line, expected);
        assert!(!joined_born);
    }

    #[test]
    fn a_program_without_a_slash_is_found_in_the_services_path() {
        let (out, status) = run(&["echo", "hi"], &env("/nonexistent:/usr/bin:/bin"));
        assert_eq!(out, "hi\n");
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    }

    #[test]
    fn a_missing_program_is_an_error_with_its_errno_and_leaves_no_child() {
        let argv = vec!["no-such-program-venussup".to_string()];
        let env = env("/nonexistent:/usr/bin");
        let err = spawn(spec(&argv, &env)).unwrap_err();
        match err {
            SpawnError::Exec { program, source } => {
                assert_eq!(program, "no-such-program-venussup");
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_child_gets_an_empty_signal_mask_its_own_session_and_only_stdio() {
        // As venussup does at start (the harness may hold cargo's jobserver).
        close_inherited_on_exec();
        let (out, status) = run(
            &[
                "/bin/sh",
                "-c",
                "grep -E '^SigBlk' /proc/self/status; ls /proc/self/fd | wc -l; cut -d' ' -f6 /proc/$$/stat; echo $$",
            ],
            &env("/usr/bin:/bin"),
        );
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?} {out}"
        );
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        // 0, 1, 2 and the one `ls` opens to list them.
        assert_eq!(lines[1].trim(), "4", "{out}");
        assert_eq!(lines[2].trim(), lines[3].trim(), "its own session: {out}");
    }

    #[test]
    fn signals_ignored_by_whoever_started_venussup_are_not_ignored_in_the_child() {
        use nix::sys::signal::{signal, SigHandler, Signal};
        // As under `nohup` and a shell's `trap '' QUIT`; nothing sends
        // these to the test process, and they are put back below.
        // SAFETY: SIG_IGN installs no handler code.
        let old = unsafe {
            [Signal::SIGQUIT, Signal::SIGHUP, Signal::SIGUSR2]
                .map(|s| (s, signal(s, SigHandler::SigIgn).unwrap()))
        };
        let (out, status) = run(
            &["/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"],
            &env("/usr/bin:/bin"),
        );
        for (s, h) in old {
            // SAFETY: puts back the disposition read above.
            unsafe { signal(s, h) }.unwrap();
        }
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
        assert!(out.contains("SigIgn:\t0000000000000000"), "{out}");
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
    }

    /// What `cat /proc/self/oom_score_adj` prints when spawned with `value`.
    fn oom_of_child(value: i32) -> Result<String, SpawnError> {
        let argv = vec![
            "/bin/cat".to_string(),
            "/proc/self/oom_score_adj".to_string(),
        ];
        let env = env("/usr/bin:/bin");
        let mut s = spec(&argv, &env);
        s.oom_score_adj = Some(value);
        let child = spawn(s)?;
        let mut out = String::new();
        child.output.unwrap().read_to_string(&mut out).unwrap();
        nix::sys::wait::waitpid(child.pid, None).unwrap();
        Ok(out.trim().to_string())
    }

    #[test]
    fn the_child_sets_its_own_oom_score_adj_before_exec() {
        let own = own_oom_score_adj().unwrap();
        // Raising is always allowed (the test runs at 0 or below).
        for value in [own, 300, 1000] {
            assert_eq!(oom_of_child(value).unwrap(), value.to_string());
        }
        // Lowering below what the process started with needs
        // CAP_SYS_RESOURCE, which a sandbox may not give even to root:
        // then the spawn fails and says so.
        match oom_of_child(-17) {
            Ok(v) => assert_eq!(v, "-17"),
            Err(e) => {
                assert!(
                    matches!(&e, SpawnError::OomScoreAdj { value: -17, source, .. } if source.raw_os_error() == Some(libc::EACCES)),
                    "{e:?}"
                );
                assert_eq!(
                    e.to_string(),
                    "failed to set oom_score_adj -17 for `/bin/cat`: Permission denied (os error 13)"
                );
            }
        }
        assert_eq!(
            std::fs::read_to_string("/proc/self/oom_score_adj")
                .unwrap()
                .trim(),
            own.to_string(),
            "the parent's own value is untouched"
        );
    }

    #[test]
    fn a_failing_hook_fails_the_spawn() {
        let argv = vec!["/bin/true".to_string()];
        let env = env("/usr/bin:/bin");
        let mut s = spec(&argv, &env);
        s.hook = Some(ChildHook(Arc::new(|| {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        })));
        let err = spawn(s).unwrap_err();
        assert!(
            matches!(&err, SpawnError::Exec { source, .. } if source.raw_os_error() == Some(libc::EPERM)),
            "{err}"
        );
    }
}
