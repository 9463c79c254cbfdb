//! `PeerAddr`: a UDP endpoint written the way .NET's `IPEndPoint.ToString()`
//! writes it, which is how the seed puts addresses on the wire.
//!
//! IPv4: `192.168.1.5:7788`; IPv6: `[fe80::1%3]:7788` (brackets, optional
//! numeric scope). Parsing is syntax only; whether an address is usable for
//! a login is a separate question ([`PeerAddr::check_usable`]) that the
//! roster answers with a refusal rather than a silent drop.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// A peer's UDP endpoint, in .NET text form on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr(SocketAddr);

/// Why a text is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an endpoint (expected 1.2.3.4:5678 or [::1]:5678)")]
pub struct EndpointSyntaxError;

/// Why an endpoint cannot be a user's receive endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnusableEndpoint {
    #[error("port 0 cannot receive")]
    PortZero,
    #[error("{0} is not a single host's address")]
    NotUnicast(IpAddr),
}

impl PeerAddr {
    /// Wraps a socket address.
    pub fn new(addr: SocketAddr) -> Self {
        Self(addr)
    }

    /// Parses the .NET text form, and only its canonical spelling.
    pub fn parse(text: &str) -> Result<Self, EndpointSyntaxError> {
        // `SocketAddr::from_str` accepts the two .NET forms (dotted quad with
        // port; bracketed IPv6 with optional `%scope` and port) and nothing
        // looser: no spaces, no host names, no octal octets. IPv6 has many
        // spellings of one address; only the one .NET (and Rust) prints is
        // taken, so that every endpoint has exactly one form on the wire and
        // re-encoding a datagram never changes its length.
        let addr = SocketAddr::from_str(text).map_err(|_| EndpointSyntaxError)?;
        if matches!(addr, SocketAddr::V6(_)) && addr.to_string() != text {
            return Err(EndpointSyntaxError);
        }
        Ok(Self(addr))
    }

    /// The socket address.
    pub fn socket_addr(self) -> SocketAddr {
        self.0
    }

    /// The IP address, with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) folded to
    /// IPv4 so that the two spellings of one host compare equal.
    pub fn canonical_ip(self) -> IpAddr {
        self.0.ip().to_canonical()
    }

    /// Whether a user can receive datagrams here: a non-zero port on a
    /// unicast address that names one host.
    pub fn check_usable(self) -> Result<(), UnusableEndpoint> {
        if self.0.port() == 0 {
            return Err(UnusableEndpoint::PortZero);
        }
        let ip = self.canonical_ip();
        let unicast = match ip {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        };
        if unicast {
            Ok(())
        } else {
            Err(UnusableEndpoint::NotUnicast(ip))
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self(addr)
    }
}

impl From<PeerAddr> for SocketAddr {
    fn from(addr: PeerAddr) -> Self {
        addr.0
    }
}

impl FromStr for PeerAddr {
    type Err = EndpointSyntaxError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for PeerAddr {
    /// Rust prints socket addresses exactly as .NET's `IPEndPoint` does:
    /// `1.2.3.4:5`, `[::1]:5`, `[fe80::1%3]:5`, `[::ffff:1.2.3.4]:5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Whether two addresses are the same host, treating IPv4-mapped IPv6 and
/// IPv4 as one.
pub fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotnet_forms_round_trip() {
        for text in [
            "127.0.0.1:7788",
            "192.168.1.5:65535",
            "[::1]:5000",
            "[fe80::1%3]:5000",
            "[::ffff:10.0.0.1]:9",
            "[2001:db8::7]:1",
        ] {
            let addr = PeerAddr::parse(text).unwrap();
            assert_eq!(addr.to_string(), text);
        }
    }

    #[test]
    fn loose_forms_are_refused() {
        for text in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            " 127.0.0.1:5",
            "127.0.0.1:5 ",
            "localhost:5",
            "::1:5000",
            "[::1]",
            "1.2.3:4",
            "01.2.3.4:5",
            // Other spellings of IPv6 addresses than the canonical one.
            "[1::1:1:1:1:1:1]:1",
            "[0:0:0:0:0:0:0:1]:5000",
            "[::FFFF:10.0.0.1]:9",
            "[::ffff:a00:1]:9",
            "[2001:DB8::7]:1",
        ] {
            assert_eq!(PeerAddr::parse(text), Err(EndpointSyntaxError), "{text:?}");
        }
    }

    #[test]
    fn usability_excludes_port_zero_and_non_unicast() {
        let ok = PeerAddr::parse("10.1.2.3:4").unwrap();
        assert_eq!(ok.check_usable(), Ok(()));
        let zero = PeerAddr::parse("10.1.2.3:0").unwrap();
        assert_eq!(zero.check_usable(), Err(UnusableEndpoint::PortZero));
        for text in [
            "0.0.0.0:5",
            "255.255.255.255:5",
            "224.0.0.1:5",
            "[::]:5",
            "[ff02::1]:5",
        ] {
            let addr = PeerAddr::parse(text).unwrap();
            assert!(addr.check_usable().is_err(), "{text}");
        }
    }

    #[test]
    fn mapped_ipv4_is_the_same_host_as_ipv4() {
        let mapped = PeerAddr::parse("[::ffff:127.0.0.1]:5").unwrap();
        let plain = PeerAddr::parse("127.0.0.1:6").unwrap();
        assert_eq!(mapped.canonical_ip(), plain.canonical_ip());
        assert!(same_host(
            mapped.socket_addr().ip(),
            plain.socket_addr().ip()
        ));
    }
}
