//! A small internet in network namespaces, for NAT traversal tests: a
//! public segment (a bridge) with the server on it, home routers that
//! masquerade a private network each, and hosts behind them. Needs root,
//! iproute2 and nftables (`scripts/test` installs nftables). Every
//! namespace is named uniquely for the run and deleted on drop.
//!
//! ```text
//! public 198.18.0.0/24 (br0; the server is 198.18.0.1)
//!   router i: wan 198.18.0.(10+i), lan 10.(i+1).0.1/24, masquerade
//!     host j: 10.(i+1).0.(10+j), default route via the router
//! ```

use anyhow::Context;

use crate::netns::{run_root, Namespace};

/// A veth pair from `inner` (named `name` there) to `outer` (named `port`
/// there, attached to its bridge `bridge` and up). Made from the root
/// namespace straight into the two, never in the root namespace itself.
fn plug(
    inner: &Namespace,
    name: &str,
    outer: &Namespace,
    port: &str,
    bridge: &str,
) -> anyhow::Result<()> {
    run_root(
        "ip",
        &[
            "link",
            "add",
            name,
            "netns",
            inner.name(),
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            outer.name(),
        ],
    )?;
    outer.exec(&["ip", "link", "set", port, "master", bridge])?;
    outer.exec(&["ip", "link", "set", port, "up"])?;
    Ok(())
}

/// The server's address on the public segment.
pub const SERVER_IP: &str = "198.18.0.1";

/// How a router treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Masquerade, and unsolicited inbound traffic dropped on the WAN side,
    /// as home routers do: punchable whichever side starts first.
    Home,
    /// Masquerade with a random port per destination (a symmetric NAT):
    /// never punchable.
    Symmetric,
}

/// A router and the hosts behind it.
pub struct Router {
    pub ns: Namespace,
    pub nat: Nat,
    /// Its public address.
    pub wan_ip: String,
    index: usize,
    hosts: usize,
}

/// The whole internet; dropping it deletes every namespace.
pub struct Internet {
    /// Hosts first: they go before their routers.
    pub hosts: Vec<Namespace>,
    pub routers: Vec<Router>,
    pub public: Namespace,
}

impl Internet {
    /// The public segment, with the server's address on it and a counter
    /// of relay requests reaching the server.
    pub fn new() -> anyhow::Result<Self> {
        let public = Namespace::fresh()?;
        public.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        public.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "br0",
        ])?;
        public.exec(&["ip", "link", "set", "br0", "up"])?;
        let count = [
            vec!["nft", "add", "table", "inet", "pigeon"],
            vec![
                "nft",
                "add chain inet pigeon input { type filter hook input priority 0; }",
            ],
            // A relay request's UDP payload starts 00 'T'.
            vec![
                "nft",
                "add rule inet pigeon input meta l4proto udp @th,64,16 0x0054 counter",
            ],
        ];
        for args in count {
            public
                .exec(&args)
                .context("counting relay requests (needs nftables: scripts/test installs it)")?;
        }
        Ok(Self {
            hosts: Vec::new(),
            routers: Vec::new(),
            public,
        })
    }

    /// A router of kind `nat` on the public segment; its index.
    pub fn router(&mut self, nat: Nat) -> anyhow::Result<usize> {
        let index = self.routers.len();
        let ns = Namespace::fresh()?;
        let wan_ip = format!("198.18.0.{}", 10 + index);
        let port = format!("r{index}");
        plug(&ns, "wan", &self.public, &port, "br0")?;
        ns.exec(&["ip", "addr", "add", &format!("{wan_ip}/24"), "dev", "wan"])?;
        ns.exec(&["ip", "link", "set", "wan", "up"])?;
        ns.exec(&["ip", "link", "add", "lan", "type", "bridge"])?;
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.{}.0.1/24", index + 1),
            "dev",
            "lan",
        ])?;
        ns.exec(&["ip", "link", "set", "lan", "up"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let masquerade = match nat {
            Nat::Home => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        let rules = vec![
            "add table ip nat".to_owned(),
            "add chain ip nat post { type nat hook postrouting priority srcnat; }".to_owned(),
            format!("add rule ip nat post oifname \"wan\" {masquerade}"),
            "add table ip fw".to_owned(),
            "add chain ip fw in { type filter hook input priority filter; policy accept; }"
                .to_owned(),
            "add chain ip fw through { type filter hook forward priority filter; policy accept; }"
                .to_owned(),
            // Nothing unsolicited from outside reaches the router or its
            // network.
            "add rule ip fw in iifname \"wan\" ct state new drop".to_owned(),
            "add rule ip fw through iifname \"wan\" ct state new drop".to_owned(),
        ];
        for rule in &rules {
            ns.exec(&["nft", rule])
                .with_context(|| format!("nft {rule}"))?;
        }
        self.routers.push(Router {
            ns,
            nat,
            wan_ip,
            index,
            hosts: 0,
        });
        Ok(index)
    }

    /// A host behind router `router`; its index in `hosts` and its
    /// address.
    pub fn host(&mut self, router: usize) -> anyhow::Result<(usize, String)> {
        let r = self.routers.get_mut(router).context("no such router")?;
        let ns = Namespace::fresh()?;
        let ip = format!("10.{}.0.{}", r.index + 1, 10 + r.hosts);
        let port = format!("h{}", r.hosts);
        r.hosts += 1;
        plug(&ns, "eth0", &r.ns, &port, "lan")?;
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        ns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.{}.0.1", r.index + 1),
        ])?;
        self.hosts.push(ns);
        Ok((self.hosts.len() - 1, ip))
    }

    /// Relay requests that reached the server so far.
    pub fn relay_requests(&self) -> anyhow::Result<u64> {
        let rules = self
            .public
            .exec(&["nft", "list", "table", "inet", "pigeon"])?;
        rules
            .lines()
            .find_map(|line| {
                let (_, rest) = line.split_once("counter packets ")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .context("no relay counter")
    }

    /// Drops UDP between the public addresses of routers `a` and `b` (both
    /// ways, on the public segment), or lets it through again.
    pub fn block(&self, a: usize, b: usize, blocked: bool) -> anyhow::Result<()> {
        let (a, b) = (
            &self.routers.get(a).context("no such router")?.wan_ip,
            &self.routers.get(b).context("no such router")?.wan_ip,
        );
        if blocked {
            self.public.exec(&["nft", "add table bridge cut"])?;
            self.public.exec(&[
                "nft",
                "add chain bridge cut between { type filter hook forward priority 0; }",
            ])?;
            for (x, y) in [(a, b), (b, a)] {
                self.public.exec(&[
                    "nft",
                    &format!(
                        "add rule bridge cut between ip saddr {x} ip daddr {y} meta l4proto udp drop"
                    ),
                ])?;
            }
        } else {
            self.public.exec(&["nft", "delete table bridge cut"])?;
        }
        Ok(())
    }
}
