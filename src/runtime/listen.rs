//! Where a venus-worker listens, found now: the effect half of
//! `plan::listen`. For `0.0.0.0:PORT`, venus-worker dials its sealer and
//! takes the local address of that connection (`extractRoutableIP`,
//! `app/venus-worker/main.go`, venus-sealer v1.6.0-3); a connected UDP
//! socket gets the same answer from the same kernel route lookup without
//! opening a connection to the sealer.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use crate::plan::listen::ListenRule;

/// The address a probe should connect to.
pub fn address(rule: &ListenRule) -> io::Result<SocketAddr> {
    match rule {
        ListenRule::At { address } => {
            // An empty host (`:3456`) listens on every interface.
            let address = match address.strip_prefix(':') {
                Some(port) => format!("127.0.0.1:{port}"),
                None => address.clone(),
            };
            first(&address)
        }
        ListenRule::RoutedTo { port, sealer } => {
            let sealer = first(sealer)?;
            let any: SocketAddr = if sealer.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(any)?;
            socket.connect(sealer)?;
            let local = socket.local_addr()?.ip();
            let port = port.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("port `{port}`"))
            })?;
            Ok(SocketAddr::new(local, port))
        }
    }
}

/// An `IP:PORT` the plan made sure of: parsed, never resolved (a DNS
/// lookup would hold up the supervisor's loop).
fn first(address: &str) -> io::Result<SocketAddr> {
    address.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{address}` is not IP:PORT"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routed_address_is_the_local_one_towards_the_sealer() {
        let rule = ListenRule::RoutedTo {
            port: "3456".into(),
            sealer: "127.0.0.1:2345".into(),
        };
        assert_eq!(address(&rule).unwrap(), "127.0.0.1:3456".parse().unwrap());
        let rule = ListenRule::At {
            address: ":3457".into(),
        };
        assert_eq!(address(&rule).unwrap(), "127.0.0.1:3457".parse().unwrap());
    }
}
