//! The address Ray binds and advertises: the configured interface's IPv4 address, else the
//! scheduler's address for this node, else what the hostname resolves to, else 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use super::{DiscoveryError, DiscoveryOptions, System};

/// One address of one interface (an interface with no address appears once with None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub address: Option<IpAddr>,
}

pub(crate) fn live_interfaces() -> Result<Vec<Interface>, DiscoveryError> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| DiscoveryError::Interfaces(e.to_string()))?;
    Ok(addrs
        .map(|a| Interface {
            address: a.address.and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            }),
            name: a.interface_name,
        })
        .collect())
}

pub(crate) fn live_resolve(host: &str) -> Vec<IpAddr> {
    match (host, 0u16).to_socket_addrs() {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    }
}

fn distinct(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// The address, and a few words on which rule chose it.
pub(crate) fn choose_address(
    sys: &dyn System,
    opts: &DiscoveryOptions,
    hostname: &str,
) -> Result<(IpAddr, String), DiscoveryError> {
    if let Some(name) = &opts.interface {
        let interfaces = sys.interfaces()?;
        if !interfaces.iter().any(|i| &i.name == name) {
            return Err(DiscoveryError::NoSuchInterface {
                name: name.clone(),
                available: distinct(interfaces.into_iter().map(|i| i.name)),
            });
        }
        let v4 = interfaces
            .iter()
            .filter(|i| &i.name == name)
            .find_map(|i| i.address.filter(IpAddr::is_ipv4));
        return match v4 {
            Some(addr) => Ok((addr, format!("interface {name}"))),
            None => Err(DiscoveryError::NoIpv4 {
                name: name.clone(),
                with_ipv4: distinct(
                    interfaces
                        .into_iter()
                        .filter(|i| i.address.is_some_and(|a| a.is_ipv4()))
                        .map(|i| i.name),
                ),
            }),
        };
    }
    if let Some(addr) = opts.scheduler_address {
        return Ok((addr, "the scheduler's address for this node".to_string()));
    }
    let resolved = sys.resolve(hostname);
    let usable = |a: &&IpAddr| !a.is_loopback() && !a.is_unspecified();
    let pick = resolved
        .iter()
        .filter(usable)
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.iter().find(usable));
    if let Some(addr) = pick {
        return Ok((*addr, format!("hostname {hostname} resolves to it")));
    }
    let why = if resolved.is_empty() {
        format!("hostname {hostname} does not resolve")
    } else {
        format!("hostname {hostname} resolves only to loopback")
    };
    Ok((
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        format!("loopback: {why}; set an interface for multi-node clusters"),
    ))
}
