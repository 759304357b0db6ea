//! Image references with Docker's normalisation: `busybox` is `docker.io/library/busybox:latest`.

use std::fmt;

/// A reference that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty string.
    #[error("invalid image reference \"\": it is empty")]
    Empty,
    /// A repository path component has characters outside `[a-z0-9._-]` or bad separators.
    #[error(
        "invalid image reference {reference:?}: repository {repository:?} must be lower-case letters, digits and single separators (. _ -) between components"
    )]
    Repository {
        /// The whole reference.
        reference: String,
        /// The repository part.
        repository: String,
    },
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error(
        "invalid image reference {reference:?}: tag {tag:?} must be 1–128 of A-Z a-z 0-9 _ . - and not start with . or -"
    )]
    Tag {
        /// The whole reference.
        reference: String,
        /// The tag.
        tag: String,
    },
    /// The digest is not `sha256:` and 64 lower-case hex digits.
    #[error("invalid image reference {reference:?}: digest {digest:?} must be sha256: followed by 64 hex digits")]
    Digest {
        /// The whole reference.
        reference: String,
        /// The digest.
        digest: String,
    },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host and optional port, `docker.io` by default.
    pub registry: String,
    /// Repository path, `library/NAME` for official Docker Hub images.
    pub repository: String,
    /// Tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:…` digest.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_owned())),
            None => (input, None),
        };
        if let Some(digest) = &digest {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(ReferenceError::Digest { reference: input.to_owned(), digest: digest.clone() });
            }
        }
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(name[last_slash + i + 1..].to_owned())),
            None => (name, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !valid {
                return Err(ReferenceError::Tag { reference: input.to_owned(), tag: tag.clone() });
            }
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            Some(_) => ("docker.io".to_owned(), path.to_owned()),
            None => ("docker.io".to_owned(), format!("library/{path}")),
        };
        let registry = if registry == "index.docker.io" { "docker.io".to_owned() } else { registry };
        if !valid_repository(&repository) {
            return Err(ReferenceError::Repository { reference: input.to_owned(), repository });
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
        Ok(Self { registry, repository, tag, digest })
    }

    /// The tag or digest to ask the registry for.
    pub(crate) fn object(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The host to connect to: Docker Hub's API lives on `registry-1.docker.io`.
    pub(crate) fn endpoint_host(&self) -> &str {
        if self.registry == "docker.io" { "registry-1.docker.io" } else { &self.registry }
    }
}

fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.split('/').all(|component| {
            let bytes = component.as_bytes();
            !bytes.is_empty()
                && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("shoal-test/web:v1", "docker.io/shoal-test/web:v1"),
            ("192.0.2.1:5000/shoal-test/web:v1", "192.0.2.1:5000/shoal-test/web:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b/c:1.0", "localhost:5000/a/b/c:1.0"),
            ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
            ("ghcr.io/o/r", "ghcr.io/o/r:latest"),
        ];
        for (input, expected) in cases {
            assert_eq!(Reference::parse(input).map(|r| r.to_string()), Ok(expected.to_owned()), "{input}");
        }
        let pinned = Reference::parse(&format!("busybox@{digest}")).expect("digest reference");
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.object(), digest);
        assert_eq!(
            Reference::parse("busybox").map(|r| r.endpoint_host().to_owned()),
            Ok("registry-1.docker.io".into())
        );
    }

    #[test]
    fn rejects_with_the_offending_part() {
        let cases = [
            ("", "it is empty"),
            ("Busybox", "repository \"library/Busybox\""),
            ("a//b", "repository \"a//b\""),
            ("web:", "tag \"\""),
            ("web:-x", "tag \"-x\""),
            ("web@sha256:abc", "digest \"sha256:abc\""),
            ("web@md5:00", "digest \"md5:00\""),
            ("registry.io/-bad", "repository \"-bad\""),
        ];
        for (input, fragment) in cases {
            let err = Reference::parse(input).expect_err(input).to_string();
            assert!(err.contains(fragment), "{input}: {err}");
        }
    }
}
