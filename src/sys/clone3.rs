//! `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)`: a child born in
//! its cgroup v2, so no process ever migrates on the restart path (a write
//! to `cgroup.procs` waits for an RCU grace period: milliseconds).
//!
//! glibc has no wrapper that takes `clone_args` and a stack of our own, and
//! a child of `CLONE_VM` must not return into the frame that made the call
//! (it would run on that frame's stack), so the syscall and the child's
//! first call are a few lines of assembly, as glibc's own `clone` is. Only
//! on x86_64; elsewhere [`clone_into_cgroup`] answers `ENOSYS` and the
//! caller joins the cgroup the old way.

use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::unistd::Pid;

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup whose
/// directory descriptor is `clone_args.cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` as of Linux 5.7 (`include/uapi/linux/sched.h`).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Whether an error means this kernel (or a seccomp filter) does not offer
/// `clone3` with `CLONE_INTO_CGROUP` at all, rather than a refusal of this
/// one cgroup: `ENOSYS` (before 5.3, or filtered), `E2BIG` (5.3 to 5.6 do
/// not know the `cgroup` field), `EINVAL` (an unknown flag).
pub fn unsupported(e: Errno) -> bool {
    matches!(e, Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL)
}

/// The child's entry: `arg` is the `&mut dyn FnMut() -> i32` that
/// [`clone_into_cgroup`] was given; the child exits with what it returns.
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    // SAFETY: `arg` points at the closure reference on the parent's frame,
    // which stays alive and untouched while the parent is suspended
    // (CLONE_VFORK) until this child execs or exits.
    let f = unsafe { &mut *arg.cast::<&mut dyn FnMut() -> i32>() };
    let code = f();
    // SAFETY: ends the child at once, running nothing of venussup's.
    unsafe { libc::_exit(code) }
}

/// Starts `child` in a new process that shares this one's memory (the
/// parent is suspended until it execs or exits), on `stack`, born in the
/// cgroup of the directory descriptor `cgroup`; its exit is reported with
/// SIGCHLD.
///
/// # Safety
///
/// As for `clone(CLONE_VM | CLONE_VFORK)`: `child` runs on `stack` in this
/// process's memory, so it must not allocate, take a lock or run a signal
/// handler (block every signal around the call), and must end in exec or
/// `_exit`. `stack` must be 16-byte aligned at its end and unused by
/// anything else until the call returns.
#[cfg(target_arch = "x86_64")]
pub unsafe fn clone_into_cgroup(
    stack: &mut [u8],
    cgroup: RawFd,
    child: &mut dyn FnMut() -> i32,
) -> Result<Pid, Errno> {
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: stack.len() as u64,
        cgroup: u64::try_from(cgroup).map_err(|_| Errno::EBADF)?,
        ..CloneArgs::default()
    };
    let mut child = child;
    let arg = (&raw mut child).cast::<libc::c_void>();
    let ret: i64;
    // The syscall reads `args` (alive on this frame). In the parent it
    // returns the pid or -errno in rax and the code below the label is
    // skipped. In the child (rax = 0) the kernel has set the stack pointer
    // to the end of `stack`: it clears the frame pointer, calls
    // `child_entry(arg)` there (16-byte aligned before the call, as the ABI
    // wants) and never comes back (`child_entry` ends in `_exit`; `ud2`
    // traps if it did). r12 and r13 survive the syscall; rcx and r11 do
    // not and are declared clobbered, so no input is placed in them.
    // SAFETY: as said just above, and the caller's contract (no
    // allocation, lock or handler in the child; a private aligned stack).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &raw const args,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") child_entry as *const () as usize,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        Err(Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL)))
    } else {
        Ok(Pid::from_raw(
            i32::try_from(ret).map_err(|_| Errno::EOVERFLOW)?,
        ))
    }
}

/// Not offered on this architecture: the caller joins the old way.
///
/// # Safety
///
/// None needed; kept `unsafe` to match the x86_64 signature.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn clone_into_cgroup(
    _stack: &mut [u8],
    _cgroup: RawFd,
    _child: &mut dyn FnMut() -> i32,
) -> Result<Pid, Errno> {
    Err(Errno::ENOSYS)
}
