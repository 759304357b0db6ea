//! `Debug` for the messages that carry secret and config payloads and unlock keys: the payload's size, never
//! its bytes, so that a `{:?}` in a log line or an error cannot leak one.

use std::fmt;

use crate::v1;

/// Stands for a payload in `Debug` output.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

impl fmt::Debug for v1::SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("annotations", &self.annotations)
            .field("data", &Redacted(self.data.len()))
            .finish()
    }
}

impl fmt::Debug for v1::ConfigSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSpec")
            .field("annotations", &self.annotations)
            .field("data", &Redacted(self.data.len()))
            .finish()
    }
}

impl fmt::Debug for v1::PayloadVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadVersion")
            .field("data_version", &self.data_version)
            .field("data", &Redacted(self.data.len()))
            .field("replaced_at", &self.replaced_at)
            .finish()
    }
}

impl fmt::Debug for v1::UnlockKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockKeys")
            .field("id", &self.id)
            .field("meta", &self.meta)
            .field("current", &Redacted(self.current.len()))
            .field("previous", &self.previous.iter().map(|p| Redacted(p.len())).collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Debug for v1::RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("id", &self.id)
            .field("meta", &self.meta)
            .field("ca_cert", &String::from_utf8_lossy(&self.ca_cert))
            .field("ca_key", &Redacted(self.ca_key.len()))
            .field("rotation", &self.rotation)
            .finish()
    }
}

impl fmt::Debug for v1::RootRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootRotation")
            .field("ca_cert", &String::from_utf8_lossy(&self.ca_cert))
            .field("ca_key", &Redacted(self.ca_key.len()))
            .field("cross_signed_cert", &String::from_utf8_lossy(&self.cross_signed_cert))
            .field("started_at", &self.started_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_never_show_in_debug_output() {
        let secret = v1::Secret {
            spec: Some(v1::SecretSpec {
                annotations: Some(v1::Annotations { name: "db-password".into(), ..Default::default() }),
                data: b"hunter2-correct-horse".to_vec(),
            }),
            previous: vec![v1::PayloadVersion {
                data_version: 1,
                data: b"old-battery-staple".to_vec(),
                replaced_at: None,
            }],
            ..Default::default()
        };
        let shown = format!("{secret:?} {:?}", v1::ConfigSpec { annotations: None, data: b"cfg-bytes".to_vec() });
        assert!(shown.contains("db-password"), "{shown}");
        assert!(shown.contains("<21 bytes redacted>"), "{shown}");
        for payload in ["hunter2", "battery", "cfg-bytes", "104, 117"] {
            assert!(!shown.contains(payload), "{payload} leaked into {shown}");
        }
    }

    #[test]
    fn unlock_keys_never_show_in_debug_output() {
        let keys = v1::UnlockKeys {
            id: "manager".into(),
            current: vec![0xab; 32],
            previous: vec![vec![0xcd; 60]],
            ..Default::default()
        };
        let shown = format!("{keys:?}");
        assert!(shown.contains("<32 bytes redacted>") && shown.contains("<60 bytes redacted>"), "{shown}");
        assert!(!shown.contains("171") && !shown.contains("205"), "key bytes leaked into {shown}");
    }
}
