//! TCP connects that never block the caller: a ready probe's connection
//! is started here and its answer awaited in the supervisor's poll set. A
//! blocking connect to an address whose packets are dropped (a firewall,
//! a full accept queue, a neighbour that never answers ARP) would hold the
//! whole loop for its timeout at every probe.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};

/// A connection under way, or already made.
#[derive(Debug)]
pub enum Connect {
    /// Connected at once (loopback usually is).
    Done,
    /// Under way: the socket turns writable when it is decided
    /// ([`finished`] says how).
    Pending(OwnedFd),
}

/// Starts a connection to `addr` without waiting; an error the kernel
/// gives at once (refused, no route) is returned as it is.
pub fn start(addr: SocketAddr) -> io::Result<Connect> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => Ok(Connect::Done),
        Err(Errno::EINPROGRESS | Errno::EINTR) => Ok(Connect::Pending(fd)),
        Err(e) => Err(e.into()),
    }
}

/// How a pending connection ended, once its socket polled writable (or
/// with an error): `Ok` when connected.
pub fn finished(fd: BorrowedFd<'_>) -> io::Result<()> {
    match getsockopt(&fd, sockopt::SocketError)? {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    /// Awaits a pending connection's answer (bounded).
    fn answer(c: Connect) -> io::Result<()> {
        match c {
            Connect::Done => Ok(()),
            Connect::Pending(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
                finished(fd.as_fd())
            }
        }
    }

    #[test]
    fn a_listener_is_reached_and_a_closed_port_refuses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        assert!(answer(start(open).unwrap()).is_ok());
        drop(listener);
        let refused = match start(open) {
            Ok(c) => answer(c),
            Err(e) => Err(e),
        };
        assert_eq!(
            refused.unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }
}
