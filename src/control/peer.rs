//! Who is on the other end of a TCP connection to the metrics listener:
//! for a connection from this host, the uid owning the peer's socket, as
//! the kernel's socket table says (`sock_diag` over netlink, one exact
//! lookup, not a read of all of `/proc/net/tcp`); for one from elsewhere,
//! its address. The listener limits connections per [`PeerKey`], so one
//! local user cannot take every slot from Prometheus.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

use nix::sys::socket::{
    recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};

/// What connections are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A socket of this host, owned by this uid.
    Uid(u32),
    /// A peer elsewhere (or one the table did not show).
    Addr(IpAddr),
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Uid(uid) => write!(f, "uid {uid}"),
            PeerKey::Addr(ip) => write!(f, "{ip}"),
        }
    }
}

/// The key of `stream`'s peer: its uid when its socket is on this host.
pub fn key_of(stream: &TcpStream) -> io::Result<PeerKey> {
    let peer = canonical(stream.peer_addr()?);
    let local = canonical(stream.local_addr()?);
    Ok(match local_uid(peer, local) {
        Some(uid) => PeerKey::Uid(uid),
        None => PeerKey::Addr(peer.ip()),
    })
}

/// An IPv4 peer seen through a dual-stack listener as `::ffff:a.b.c.d`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The uid owning the socket bound to `peer` and connected to `local`,
/// if it is a socket of this host (of this network namespace).
fn local_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    send(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &request(peer, local),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 512];
    let n = recv(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &mut buf,
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    uid_in_answer(&buf[..n])
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const HEADER: usize = 16;
/// `struct inet_diag_req_v2`.
const REQUEST: usize = 56;
/// `idiag_uid` in `struct inet_diag_msg`: after family, state, timer,
/// retrans (4 bytes), the socket id (48), expires, rqueue, wqueue (12).
const UID_AT: usize = HEADER + 4 + 48 + 12;

/// A `SOCK_DIAG_BY_FAMILY` request for the one TCP socket whose own
/// address is `src` and whose peer is `dst` (pure).
fn request(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = match src {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let len = u32::try_from(HEADER + REQUEST).unwrap_or(u32::MAX);
    let mut m = Vec::with_capacity(HEADER + REQUEST);
    m.extend(len.to_ne_bytes());
    m.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend(NLM_F_REQUEST.to_ne_bytes());
    m.extend([0u8; 8]); // sequence, port id
    m.push(u8::try_from(family).unwrap_or(0));
    m.push(u8::try_from(libc::IPPROTO_TCP).unwrap_or(0));
    m.extend([0u8; 2]); // extensions, pad
    m.extend(u32::MAX.to_ne_bytes()); // every state
    m.extend(src.port().to_be_bytes());
    m.extend(dst.port().to_be_bytes());
    m.extend(address(src.ip()));
    m.extend(address(dst.ip()));
    m.extend([0u8; 4]); // interface
    m.extend(u32::MAX.to_ne_bytes()); // no cookie
    m.extend(u32::MAX.to_ne_bytes());
    m
}

/// An address as the socket id holds it: 16 bytes, network order.
fn address(ip: IpAddr) -> [u8; 16] {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => a = v6.octets(),
    }
    a
}

/// The uid in the kernel's answer, none when it is an error (no such
/// socket: the peer is elsewhere) (pure).
fn uid_in_answer(answer: &[u8]) -> Option<u32> {
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    Some(u32::from_ne_bytes(
        answer.get(UID_AT..UID_AT + 4)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_request_names_the_one_socket() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let m = request(src, dst);
        assert_eq!(m.len(), 72);
        assert_eq!(&m[0..4], &72u32.to_ne_bytes());
        assert_eq!(m[HEADER], 2); // AF_INET
        assert_eq!(m[HEADER + 1], 6); // TCP
        assert_eq!(&m[HEADER + 8..HEADER + 12], &[0x9c, 0x40, 0x23, 0x8c]);
        assert_eq!(&m[HEADER + 12..HEADER + 16], &[127, 0, 0, 1]);
        assert_eq!(&m[HEADER + 28..HEADER + 32], &[127, 0, 0, 1]);
    }

    #[test]
    fn an_error_answer_has_no_uid() {
        let mut err = vec![0u8; 36];
        err[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        assert_eq!(uid_in_answer(&err), None);
        assert_eq!(uid_in_answer(&[1, 2]), None);
    }

    #[test]
    fn a_loopback_peer_is_known_by_its_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        // The owner of this process's sockets: whoever runs the test.
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(key_of(&server_side).unwrap(), PeerKey::Uid(me));
        drop(client);
    }

    #[test]
    fn a_mapped_address_is_counted_as_ipv4() {
        let v6: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(canonical(v6), "10.1.2.3:80".parse().unwrap());
    }
}
