//! Egress addresses on the node's gateway bridge (Swarm's docker_gwbridge): one per task that
//! has egress, and one for the ingress sandbox. The node allocates them itself from its gateway
//! subnet (the first host address is the bridge's); an address stays with its owner until it is
//! released, and after an agent restart the allocator is seeded with the addresses the running
//! tasks' namespaces already have, so they keep them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use shoal_overlay::Cidr;

/// The gateway subnet has no address left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway subnet {subnet}: no egress address left for {owner} ({used} in use)")]
pub(crate) struct EgressExhausted {
    /// The subnet.
    pub(crate) subnet: Cidr,
    /// Who asked.
    pub(crate) owner: String,
    /// Addresses in use.
    pub(crate) used: usize,
}

/// Egress addresses by owner (a task ID, or the ingress sandbox).
#[derive(Debug, Clone)]
pub(crate) struct EgressPool {
    /// The network address of the subnet, as a number.
    base: u32,
    /// Number of addresses in the subnet.
    size: u32,
    subnet: Cidr,
    by_owner: BTreeMap<String, Ipv4Addr>,
    used: BTreeSet<Ipv4Addr>,
}

impl EgressPool {
    /// A pool over `subnet` (IPv4, at most /30): its first host address is the bridge's, its last
    /// the broadcast address; the others are handed out lowest first.
    pub(crate) fn new(subnet: Cidr) -> Option<Self> {
        let std::net::IpAddr::V4(addr) = subnet.addr else { return None };
        if subnet.prefix_len > 30 {
            return None;
        }
        let size = 1u32 << (32 - u32::from(subnet.prefix_len));
        let mask = u32::MAX.checked_shl(32 - u32::from(subnet.prefix_len)).unwrap_or(0);
        let base = u32::from(addr) & mask;
        Some(Self {
            base,
            size,
            subnet: Cidr { addr: Ipv4Addr::from(base).into(), prefix_len: subnet.prefix_len },
            by_owner: BTreeMap::new(),
            used: BTreeSet::new(),
        })
    }

    /// The subnet (its network address).
    pub(crate) fn subnet(&self) -> Cidr {
        self.subnet
    }

    /// The bridge's address: the subnet's first host address.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// Records that `owner` has `addr` already (found on its namespace after a restart). An
    /// address outside the subnet, the bridge's or one already taken is ignored (the owner then
    /// gets a new one).
    pub(crate) fn seed(&mut self, owner: &str, addr: Ipv4Addr) -> bool {
        let offset = u32::from(addr).wrapping_sub(self.base);
        if offset < 2 || offset >= self.size - 1 || self.used.contains(&addr) || self.by_owner.contains_key(owner) {
            return false;
        }
        self.used.insert(addr);
        self.by_owner.insert(owner.to_owned(), addr);
        true
    }

    /// The address of `owner`, allocating the lowest free one the first time.
    pub(crate) fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, EgressExhausted> {
        if let Some(addr) = self.by_owner.get(owner) {
            return Ok(*addr);
        }
        let free = (2..self.size - 1).map(|offset| Ipv4Addr::from(self.base + offset)).find(|a| !self.used.contains(a));
        let Some(addr) = free else {
            return Err(EgressExhausted { subnet: self.subnet, owner: owner.to_owned(), used: self.used.len() });
        };
        self.used.insert(addr);
        self.by_owner.insert(owner.to_owned(), addr);
        Ok(addr)
    }

    /// The address of `owner`, if it has one.
    pub(crate) fn get(&self, owner: &str) -> Option<Ipv4Addr> {
        self.by_owner.get(owner).copied()
    }

    /// Frees the address of `owner`.
    pub(crate) fn release(&mut self, owner: &str) {
        if let Some(addr) = self.by_owner.remove(owner) {
            self.used.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str) -> EgressPool {
        EgressPool::new(subnet.parse().expect("cidr")).expect("pool")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn addresses_are_handed_out_lowest_first_and_kept_per_owner() {
        let mut pool = pool("198.19.0.0/24");
        assert_eq!(pool.gateway(), ip("198.19.0.1"));
        assert_eq!(pool.allocate("t1"), Ok(ip("198.19.0.2")));
        assert_eq!(pool.allocate("t2"), Ok(ip("198.19.0.3")));
        assert_eq!(pool.allocate("t1"), Ok(ip("198.19.0.2")), "an owner keeps its address");
        pool.release("t1");
        assert_eq!(pool.get("t1"), None);
        assert_eq!(pool.allocate("t3"), Ok(ip("198.19.0.2")), "a released address is reused");
        assert_eq!(pool.allocate("t1"), Ok(ip("198.19.0.4")));
    }

    #[test]
    fn a_restart_keeps_the_addresses_the_namespaces_have() {
        // Before the restart: t1, t2, t3 had .2, .3, .4; t2 has ended since.
        let mut pool = pool("198.19.0.0/24");
        assert!(pool.seed("t3", ip("198.19.0.4")));
        assert!(pool.seed("t1", ip("198.19.0.2")));
        assert_eq!(pool.allocate("t1"), Ok(ip("198.19.0.2")));
        assert_eq!(pool.allocate("t3"), Ok(ip("198.19.0.4")));
        assert_eq!(pool.allocate("t4"), Ok(ip("198.19.0.3")));
        // Seeds that cannot be honoured: outside the subnet, the bridge, the broadcast address,
        // taken by another owner.
        assert!(!pool.seed("x", ip("198.19.1.5")));
        assert!(!pool.seed("x", ip("198.19.0.1")));
        assert!(!pool.seed("x", ip("198.19.0.255")));
        assert!(!pool.seed("x", ip("198.19.0.2")));
        assert_eq!(pool.allocate("x"), Ok(ip("198.19.0.5")));
    }

    #[test]
    fn an_exhausted_subnet_names_the_owner() {
        let mut pool = pool("198.19.0.0/30");
        assert_eq!(pool.allocate("t1"), Ok(ip("198.19.0.2")));
        let err = pool.allocate("t2").expect_err("full");
        assert_eq!(err.to_string(), "gateway subnet 198.19.0.0/30: no egress address left for t2 (1 in use)");
    }

    #[test]
    fn a_subnet_is_normalised_and_must_be_ipv4_with_room() {
        assert_eq!(pool("198.19.0.77/24").subnet().to_string(), "198.19.0.0/24");
        assert!(EgressPool::new("198.19.0.0/31".parse().expect("cidr")).is_none());
        assert!(EgressPool::new("fd00::/64".parse().expect("cidr")).is_none());
    }
}
