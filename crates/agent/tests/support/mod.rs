//! What the agent's containerd tests share: their prerequisites, and a one-node harness cluster
//! with a private containerd and the test registry holding one test image.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use shoal_runtime::ContainerdConfig;
use shoal_testkit::privileged::{self, Need};
use shoal_testkit::shoal::runtime_logger;
use shoal_testkit::{Cluster, Containerd, Registry, images};

/// The container log writer, when the test can run (root, containerd, the registry, `extra`,
/// the logger built).
pub(crate) fn prerequisites(test: &str, extra: &[Need]) -> Option<PathBuf> {
    let mut needs = privileged::CONTAINERD.to_vec();
    needs.extend_from_slice(privileged::REGISTRY);
    needs.extend_from_slice(extra);
    if !privileged::require(test, &needs) {
        return None;
    }
    runtime_logger(test)
}

/// A one-node cluster whose registry holds `repository`'s test image, and the runtime config
/// of an agent there.
pub(crate) struct OneNode {
    pub(crate) cluster: Cluster,
    pub(crate) containerd: Containerd,
    pub(crate) registry: Registry,
    /// The image's reference in the registry.
    pub(crate) image: String,
    /// For `Containerd::connect`, in the node's namespace (the pull reaches 192.0.2.1:5000).
    pub(crate) config: ContainerdConfig,
}

impl OneNode {
    pub(crate) fn start(logger: &Path, repository: &str) -> Self {
        let cluster = Cluster::new(1).expect("cluster");
        let defs: Vec<_> = images::ALL.iter().filter(|d| d.repository == repository).copied().collect();
        let built = images::build(&defs, Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("images");
        let containerd = Containerd::start(&cluster.dir().join("containerd"), &format!("{}-push", cluster.prefix()))
            .expect("containerd");
        let registry = Registry::start(&cluster).expect("registry");
        registry.push_all(&containerd, &built).expect("push");
        let image = registry.reference(&built[0]);
        let mut config = ContainerdConfig::new(
            containerd.socket(),
            &format!("{}-agent", cluster.prefix()),
            cluster.dir().join("runtime"),
            logger,
        );
        config.insecure_registries = vec![registry.addr().to_string()];
        Self { cluster, containerd, registry, image, config }
    }

    /// The node's network namespace.
    pub(crate) fn netns(&self) -> String {
        self.cluster.node(1).expect("node1").netns.clone()
    }
}
