//! Picking ports that are free on this node. Every Ray port is given explicitly, because two
//! clusters (or two users) may share a node; a port taken between the probe and `ray start`
//! makes the start fail, and the caller retries with a fresh pick.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use rand::Rng;

#[derive(Debug, thiserror::Error)]
#[error(
    "found no free {what} in ports {lo}-{hi} on this node after {tries} tries; widen `ray.port_range` in the config"
)]
pub struct NoFreePorts {
    pub what: &'static str,
    pub lo: u16,
    pub hi: u16,
    pub tries: u32,
}

/// Ports one node's Ray needs. The head's three extra ports are only used on the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NodePorts {
    pub gcs: u16,
    pub dashboard: u16,
    pub client_server: u16,
    pub node_manager: u16,
    pub object_manager: u16,
    pub runtime_env_agent: u16,
    pub dashboard_agent_grpc: u16,
    pub dashboard_agent_listen: u16,
    pub metrics_export: u16,
    pub min_worker: u16,
    pub max_worker: u16,
}

impl NodePorts {
    /// Every port with its name, for records and messages.
    pub fn named(&self) -> Vec<(&'static str, u16)> {
        vec![
            ("gcs", self.gcs),
            ("dashboard", self.dashboard),
            ("client_server", self.client_server),
            ("node_manager", self.node_manager),
            ("object_manager", self.object_manager),
            ("runtime_env_agent", self.runtime_env_agent),
            ("dashboard_agent_grpc", self.dashboard_agent_grpc),
            ("dashboard_agent_listen", self.dashboard_agent_listen),
            ("metrics_export", self.metrics_export),
            ("min_worker", self.min_worker),
            ("max_worker", self.max_worker),
        ]
    }

    /// The ports a worker node uses (the head's GCS, dashboard and client ports are not its).
    pub fn worker_named(&self) -> Vec<(&'static str, u16)> {
        let head_only = ["gcs", "dashboard", "client_server"];
        self.named()
            .into_iter()
            .filter(|(n, _)| !head_only.contains(n))
            .collect()
    }
}

/// Connections a listener of ours queues before it accepts them. Every worker agent of an
/// allocation connects to the control service at once; past the default of 128 the kernel drops
/// SYNs (a 1 s retransmit for that agent) or resets connections. The kernel caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener of ours (control service, metrics) on `ip`, trying ports from `picker`
/// until one binds: binding directly leaves no gap between choosing a port and using it.
pub async fn bind_listener(
    ip: std::net::IpAddr,
    picker: &mut PortPicker,
    what: &'static str,
) -> Result<tokio::net::TcpListener, std::io::Error> {
    let mut last = None;
    for _ in 0..20 {
        let port = picker
            .single(what)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::AddrInUse, e.to_string()))?;
        match listen(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("no {what} could be bound on {ip}"))))
}

/// `TcpListener::bind` with a backlog of `LISTEN_BACKLOG` (and SO_REUSEADDR, as it sets).
fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, std::io::Error> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Free on every address of this node: binding the wildcard fails if any address holds it.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).is_ok()
}

pub struct PortPicker {
    lo: u16,
    hi: u16,
    taken: BTreeSet<u16>,
}

const TRIES: u32 = 200;

impl PortPicker {
    pub fn new(lo: u16, hi: u16) -> Self {
        PortPicker {
            lo,
            hi,
            taken: BTreeSet::new(),
        }
    }

    /// One free port not handed out before.
    pub fn single(&mut self, what: &'static str) -> Result<u16, NoFreePorts> {
        let mut rng = rand::rng();
        for _ in 0..TRIES {
            let p = rng.random_range(self.lo..=self.hi);
            if !self.taken.contains(&p) && is_free(p) {
                self.taken.insert(p);
                return Ok(p);
            }
        }
        Err(self.none(what))
    }

    /// A contiguous block of `len` free ports not overlapping anything handed out before.
    pub fn block(&mut self, what: &'static str, len: u16) -> Result<(u16, u16), NoFreePorts> {
        let mut rng = rand::rng();
        if len == 0 || self.hi - self.lo < len {
            return Err(self.none(what));
        }
        'tries: for _ in 0..TRIES {
            let start = rng.random_range(self.lo..=self.hi - len + 1);
            let end = start + len - 1;
            if self.taken.range(start..=end).next().is_some() {
                continue;
            }
            for p in start..=end {
                if !is_free(p) {
                    continue 'tries;
                }
            }
            self.taken.extend(start..=end);
            return Ok((start, end));
        }
        Err(self.none(what))
    }

    fn none(&self, what: &'static str) -> NoFreePorts {
        NoFreePorts {
            what,
            lo: self.lo,
            hi: self.hi,
            tries: TRIES,
        }
    }

    /// A full set of ports for one node.
    pub fn node_ports(&mut self, worker_ports: u16) -> Result<NodePorts, NoFreePorts> {
        let (min_worker, max_worker) = self.block("worker port range", worker_ports)?;
        Ok(NodePorts {
            gcs: self.single("GCS port")?,
            dashboard: self.single("dashboard port")?,
            client_server: self.single("client server port")?,
            node_manager: self.single("node manager port")?,
            object_manager: self.single("object manager port")?,
            runtime_env_agent: self.single("runtime env agent port")?,
            dashboard_agent_grpc: self.single("dashboard agent port")?,
            dashboard_agent_listen: self.single("dashboard agent port")?,
            metrics_export: self.single("metrics export port")?,
            min_worker,
            max_worker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_distinct_ports_outside_the_worker_range() {
        let mut picker = PortPicker::new(20000, 30000);
        let p = picker.node_ports(100).unwrap();
        let singles = [
            p.gcs,
            p.dashboard,
            p.client_server,
            p.node_manager,
            p.object_manager,
            p.runtime_env_agent,
            p.dashboard_agent_grpc,
            p.dashboard_agent_listen,
            p.metrics_export,
        ];
        let set: BTreeSet<_> = singles.iter().collect();
        assert_eq!(set.len(), singles.len());
        assert_eq!(p.max_worker - p.min_worker + 1, 100);
        for s in singles {
            assert!(!(p.min_worker..=p.max_worker).contains(&s));
            assert!((20000..=30000).contains(&s));
        }
    }

    #[test]
    fn a_port_in_use_is_not_picked() {
        let held = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!is_free(port));
        let mut picker = PortPicker::new(port, port);
        assert!(picker.single("x").is_err());
    }

    #[test]
    fn a_range_too_small_is_an_error_that_says_what_to_do() {
        let mut picker = PortPicker::new(20000, 20010);
        let err = picker.block("worker port range", 50).unwrap_err();
        assert!(err.to_string().contains("ray.port_range"), "{err}");
    }
}
