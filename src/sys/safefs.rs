//! Files venussup writes or truncates as root, opened relative to their
//! folder's descriptor and never through a link.
//!
//! A path is resolved again at every `open`, so a link planted in a folder
//! that someone else can write would send root's write elsewhere. Here a
//! folder is opened once ([`Dir::open`], its last part never a link), and
//! every file in it is opened with `openat(O_NOFOLLOW)`: a link is refused
//! (`ELOOP`, said as "is a symbolic link"). A file to be replaced is
//! created anew (`O_EXCL`, after removing what had its name) so a planted
//! hard link is never written through; a file written in place (a log) must
//! be a regular file with one link. Renames stay inside the folder
//! (`renameat`), and [`Dir::write_atomic`] syncs the new file before the
//! rename and the folder after it, so a crash leaves the old or the new
//! content, never an empty file.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// An open folder: the files venussup keeps in it are reached through it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What an entry of a folder is, read without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    pub regular: bool,
    pub links: u64,
}

/// A name inside the folder: one part, no `/`, not `.` or `..`.
fn checked(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a file name", name.to_string_lossy()),
        ));
    }
    Ok(name)
}

/// `ELOOP` from `O_NOFOLLOW` said for what it is.
fn said(e: Errno, path: &Path) -> io::Error {
    if e == Errno::ELOOP {
        return io::Error::other(format!(
            "{} is a symbolic link; venussup does not write through links (remove it)",
            path.display()
        ));
    }
    e.into()
}

/// A file written in place must be a regular file with no other name:
/// a hard link planted to a file of root's would be written through. A
/// character device (`/dev/null` as a log) is allowed where `device`.
fn plain(file: &File, path: &Path, device: bool) -> io::Result<()> {
    let st = fstat(file.as_fd())?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let ok = (kind == SFlag::S_IFREG && st.st_nlink == 1) || (device && kind == SFlag::S_IFCHR);
    if !ok {
        return Err(io::Error::other(format!(
            "{} is not a plain file (a regular file with one link); venussup does not write to it (remove it)",
            path.display()
        )));
    }
    Ok(())
}

fn entry(st: &FileStat) -> Entry {
    Entry {
        size: u64::try_from(st.st_size).unwrap_or(0),
        regular: SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG,
        links: st.st_nlink,
    }
}

impl Dir {
    /// Opens the folder at `path`; its last part may not be a link.
    pub fn open(path: &Path) -> io::Result<Self> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| said(e, path))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The folder `name` in this one, made with `mode` when missing.
    pub fn subdir(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<Self> {
        let name = checked(name.as_ref())?;
        let path = self.path.join(name);
        match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::empty()).map_err(|e| said(e, &path))?;
        Ok(Self { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `name` as it is (a link is not followed), or None when missing.
    pub fn entry(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Entry>> {
        let name = checked(name.as_ref())?;
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(entry(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn open_at(&self, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<File> {
        let name = checked(name)?;
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(mode))
            .map(File::from)
            .map_err(|e| said(e, &self.path.join(name)))
    }

    /// `name` for reading, never through a link.
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        self.open_at(name.as_ref(), OFlag::O_RDONLY, 0)
    }

    /// `name` for appending, created with `mode` when missing; it must be
    /// a plain file or a character device (see [`plain`]). Opened without
    /// blocking (a planted FIFO would wait for a reader), then blocking.
    pub fn open_append(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        use nix::fcntl::{fcntl, FcntlArg};
        let name = name.as_ref();
        let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NONBLOCK;
        let file = self.open_at(name, flags, mode)?;
        plain(&file, &self.path.join(name), true)?;
        fcntl(file.as_fd(), FcntlArg::F_SETFL(OFlag::O_APPEND))?;
        Ok(file)
    }

    /// An existing plain file opened for writing, not truncated.
    pub fn open_write(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        let file = self.open_at(name, OFlag::O_WRONLY, 0)?;
        plain(&file, &self.path.join(name), false)?;
        Ok(file)
    }

    /// `name` for reading and writing, created with `mode` when missing,
    /// not truncated; a plain file.
    pub fn open_rw(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = name.as_ref();
        let file = self.open_at(name, OFlag::O_RDWR | OFlag::O_CREAT, mode)?;
        plain(&file, &self.path.join(name), false)?;
        Ok(file)
    }

    /// A new, empty file `name` with exactly `mode`: whatever had the name
    /// (a link included) is removed first, and the file is created with
    /// `O_EXCL`, so nothing planted is written through.
    pub fn create_new(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = name.as_ref();
        self.remove(name)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let file = self.open_at(name, flags, mode)?;
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
        Ok(file)
    }

    /// Removes the file `name`; a missing one is no error.
    pub fn remove(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = checked(name.as_ref())?;
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` to `to`, both in this folder.
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        let (from, to) = (checked(from.as_ref())?, checked(to.as_ref())?);
        renameat(self.fd.as_fd(), from, self.fd.as_fd(), to).map_err(Into::into)
    }

    /// Makes the folder's entries (a rename) durable.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(self.fd.as_fd()).map_err(Into::into)
    }

    /// Replaces `name` with `bytes` (mode `mode`): a new temporary file,
    /// synced, renamed over `name`, then the folder synced.
    pub fn write_atomic(&self, name: impl AsRef<OsStr>, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.replace_with(name.as_ref(), bytes, mode, true)
    }

    /// [`Dir::write_atomic`] without the syncs: for a file rewritten at
    /// every change and made again at every start (a snapshot), where a
    /// sync per change would stall the caller behind the disk.
    pub fn replace(&self, name: impl AsRef<OsStr>, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.replace_with(name.as_ref(), bytes, mode, false)
    }

    fn replace_with(&self, name: &OsStr, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
        let name = checked(name)?;
        let mut tmp = name.to_os_string();
        tmp.push(".tmp");
        let mut file = self.create_new(&tmp, mode)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        self.rename(&tmp, name)?;
        if durable {
            self.sync()?;
        }
        Ok(())
    }
}

/// [`Dir::write_atomic`] for the file at `path`, in its folder.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = split(path)?;
    Dir::open(dir)?.write_atomic(name, bytes, mode)
}

/// [`Dir::replace`] for the file at `path`, in its folder.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = split(path)?;
    Dir::open(dir)?.replace(name, bytes, mode)
}

/// A file's folder and name.
pub fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    Ok((dir.unwrap_or(Path::new(".")), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_atomic_replaces_a_planted_link_and_never_writes_its_target() {
        let top = tempfile::tempdir().unwrap();
        let victim = top.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let dir = top.path().join("state");
        fs::create_dir(&dir).unwrap();
        symlink(&victim, dir.join("status.json.tmp")).unwrap();
        symlink(&victim, dir.join("status.json")).unwrap();
        write_atomic(&dir.join("status.json"), b"{}", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(dir.join("status.json")).unwrap(), b"{}");
        assert_eq!(mode(&dir.join("status.json")), 0o600);
        assert!(!dir.join("status.json.tmp").exists());
    }

    #[test]
    fn a_hard_link_is_not_written_through() {
        let top = tempfile::tempdir().unwrap();
        let victim = top.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        fs::hard_link(&victim, top.path().join("s.log")).unwrap();
        let d = Dir::open(top.path()).unwrap();
        let err = d.open_append("s.log", 0o640).unwrap_err();
        assert!(err.to_string().contains("not a plain file"), "{err}");
        assert!(d.open_write("s.log").is_err());
        d.create_new("s.log", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A FIFO is refused at once, not waited on; /dev/null is a log.
        nix::unistd::mkfifo(&top.path().join("f.log"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(d.open_append("f.log", 0o640).is_err());
        let null = Dir::open(Path::new("/dev"))
            .unwrap()
            .open_append("null", 0o640)
            .unwrap();
        let flags = nix::fcntl::fcntl(null.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0, "blocking again");
        assert_ne!(flags & libc::O_APPEND, 0);
    }

    #[test]
    fn links_are_refused_by_name_and_folders_too() {
        let top = tempfile::tempdir().unwrap();
        let victim = top.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        symlink(&victim, top.path().join("s.log")).unwrap();
        let d = Dir::open(top.path()).unwrap();
        let err = d.open_append("s.log", 0o640).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(d.open_write("s.log").is_err() && d.open_read("s.log").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        symlink(top.path(), top.path().join("linked")).unwrap();
        assert!(Dir::open(&top.path().join("linked")).is_err());
        assert!(d.subdir("linked", 0o700).is_err());
        assert!(d.open_read("../victim").is_err(), "one name, no path");
        let e = d.entry("s.log").unwrap().unwrap();
        assert!(!e.regular, "the link itself is described");
        assert_eq!(d.entry("missing").unwrap(), None);
    }

    #[test]
    fn renames_and_removals_stay_in_the_folder() {
        let top = tempfile::tempdir().unwrap();
        let d = Dir::open(top.path()).unwrap();
        d.write_atomic("a", b"1", 0o640).unwrap();
        d.rename("a", "b").unwrap();
        assert_eq!(fs::read(top.path().join("b")).unwrap(), b"1");
        assert_eq!(mode(&top.path().join("b")), 0o640);
        d.remove("b").unwrap();
        d.remove("b").unwrap();
        symlink("/nonexistent", top.path().join("snap.tmp")).unwrap();
        replace(&top.path().join("snap"), b"2", 0o600).unwrap();
        assert_eq!(fs::read(top.path().join("snap")).unwrap(), b"2");
        let sub = d.subdir("once", 0o700).unwrap();
        sub.create_new("x.done", 0o600).unwrap();
        assert!(top.path().join("once/x.done").exists());
    }
}
