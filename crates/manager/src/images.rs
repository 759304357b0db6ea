//! Image digests for the control API's `ResolveImage`: the manager crate does not talk to
//! registries itself (it depends on no runtime); the process that embeds it supplies an
//! [`ImageResolver`] (shoal-manager passes the registry client its agent pulls with).

use std::future::Future;
use std::pin::Pin;

/// What [`ImageResolver::digest`] returns: the digest, or why there is none.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Asks an image's registry which manifest its tag names now.
pub trait ImageResolver: Send + Sync + std::fmt::Debug {
    /// The digest (`sha256:…`) of the manifest or index `image` names, or a sentence saying
    /// why it cannot be had (unreachable registry, unknown tag, bad reference).
    fn digest<'a>(&'a self, image: &'a str) -> Resolving<'a>;
}

/// `image` pinned to `digest`, as docker writes it (`web:v1@sha256:…`); an image that names a
/// digest already stays as it is.
pub(crate) fn pinned(image: &str, digest: &str) -> String {
    if image.contains('@') { image.to_owned() } else { format!("{image}@{digest}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_keeps_its_name_and_gains_the_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(pinned("registry.example:5000/web:v1", &digest), format!("registry.example:5000/web:v1@{digest}"));
        assert_eq!(pinned("web", &digest), format!("web@{digest}"));
        let already = format!("web:v1@sha256:{}", "b".repeat(64));
        assert_eq!(pinned(&already, &digest), already, "a pinned image is not re-pinned");
    }
}
