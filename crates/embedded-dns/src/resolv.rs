//! resolv.conf in both directions: reading the node's (upstream servers, search domains, options)
//! and writing the one each container gets (`nameserver 127.0.0.11`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// At most this many upstream servers are used, as glibc does (`MAXNS`).
pub const MAX_UPSTREAMS: usize = 3;

/// Reading the node's resolv.conf failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    /// The file could not be read.
    #[error("read resolv.conf {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What matters in a node's resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostResolvConf {
    /// `nameserver` lines, in order (IPv6 zone suffixes dropped).
    pub nameservers: Vec<IpAddr>,
    /// The `search` (or `domain`) list; the last such line wins, as in glibc.
    pub search: Vec<String>,
    /// `options` words, in order.
    pub options: Vec<String>,
}

impl HostResolvConf {
    /// Parses resolv.conf text. Unknown lines and malformed addresses are ignored, as the C
    /// resolver does.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let addr: Option<IpAddr> =
                        words.next().and_then(|w| w.split('%').next()).and_then(|w| w.parse().ok());
                    conf.nameservers.extend(addr);
                }
                Some("search" | "domain") => conf.search = words.map(str::to_owned).collect(),
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// Reads and parses a file, usually `/etc/resolv.conf`.
    pub fn read(path: &Path) -> Result<Self, ResolvConfError> {
        std::fs::read_to_string(path)
            .map(|text| Self::parse(&text))
            .map_err(|source| ResolvConfError::Read { path: path.to_owned(), source })
    }

    /// The upstream servers for forwarding: the first [`MAX_UPSTREAMS`] nameservers, port 53.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers.iter().take(MAX_UPSTREAMS).map(|ip| SocketAddr::new(*ip, 53)).collect()
    }
}

/// Options for a container's resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerResolvConf {
    /// Search domains, tried in order after the cluster domain (usually the node's).
    pub search: Vec<String>,
    /// The cluster domain, searched first so that `web` also finds `web.CLUSTER-DOMAIN`.
    pub cluster_domain: Option<String>,
    /// `ndots`: names with fewer dots are tried with the search list first. 0 (Docker's choice)
    /// sends every name as given first, which is what service names need.
    pub ndots: u8,
    /// Other `options` words (the node's, minus `ndots`).
    pub options: Vec<String>,
}

impl ContainerResolvConf {
    /// Derives a container's settings from the node's resolv.conf.
    pub fn from_host(host: &HostResolvConf, cluster_domain: Option<&str>) -> Self {
        Self {
            search: host.search.clone(),
            cluster_domain: cluster_domain.map(str::to_owned),
            ndots: 0,
            options: host.options.iter().filter(|o| !o.starts_with("ndots:")).cloned().collect(),
        }
    }

    /// The file content.
    pub fn render(&self) -> String {
        let mut out = String::from("# Written by Shoal: the embedded DNS server answers inside this container.\n");
        out.push_str("nameserver 127.0.0.11\n");
        let search: Vec<&str> = self
            .cluster_domain
            .iter()
            .map(String::as_str)
            .chain(self.search.iter().map(String::as_str).filter(|s| Some(*s) != self.cluster_domain.as_deref()))
            .collect();
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        let mut options = vec![format!("ndots:{}", self.ndots)];
        options.extend(self.options.iter().cloned());
        out.push_str(&format!("options {}\n", options.join(" ")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_resolv_conf() {
        let conf = HostResolvConf::parse(
            "# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0 ; zone\nnameserver bogus\n\
             nameserver 198.51.100.53\nnameserver 203.0.113.53\n\
             domain old.example\nsearch corp.example lab.example\noptions ndots:2 timeout:1\noptions edns0\n",
        );
        assert_eq!(conf.nameservers.len(), 4);
        assert_eq!(conf.search, ["corp.example", "lab.example"]);
        assert_eq!(conf.options, ["ndots:2", "timeout:1", "edns0"]);
        let upstreams: Vec<String> = conf.upstreams().iter().map(ToString::to_string).collect();
        assert_eq!(upstreams, ["192.0.2.53:53", "[fe80::1]:53", "198.51.100.53:53"], "three at most");
    }

    #[test]
    fn renders_container_resolv_conf() {
        let host = HostResolvConf::parse("nameserver 192.0.2.53\nsearch corp.example\noptions ndots:2 edns0\n");
        let conf = ContainerResolvConf::from_host(&host, Some("shoal.internal"));
        assert_eq!(
            conf.render(),
            "# Written by Shoal: the embedded DNS server answers inside this container.\n\
             nameserver 127.0.0.11\nsearch shoal.internal corp.example\noptions ndots:0 edns0\n"
        );
        let bare = ContainerResolvConf { search: vec![], cluster_domain: None, ndots: 1, options: vec![] };
        assert!(bare.render().ends_with("nameserver 127.0.0.11\noptions ndots:1\n"));
    }

    #[test]
    fn read_error_names_the_path() {
        let err = HostResolvConf::read(Path::new("/nonexistent/resolv.conf")).expect_err("missing");
        assert!(err.to_string().starts_with("read resolv.conf /nonexistent/resolv.conf: "), "{err}");
    }
}
