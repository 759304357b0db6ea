//! The host's mount table as `/proc/self/mountinfo` shows it: which mount a path is on and how
//! that mount propagates (for bind mounts with shared or slave propagation), and what is mounted
//! at or under a volume's directory (for the local volume driver).

use std::path::{Path, PathBuf};

/// The file this module reads.
pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo, the fields Shoal looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Where it is mounted (escapes such as `\040` decoded).
    pub(crate) mount_point: PathBuf,
    /// Its filesystem type (`tmpfs`, `nfs`, …).
    pub(crate) fstype: String,
    /// In a peer group (`shared:N`): mounts propagate both ways.
    pub(crate) shared: bool,
    /// A slave of a peer group (`master:N`): mounts propagate into it.
    pub(crate) slave: bool,
}

/// Parses mountinfo text; lines that do not have the documented shape are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTIONS
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mount_point = unescape(fields.get(4)?);
            let optional = fields.get(6..).unwrap_or_default();
            Some(MountEntry {
                mount_point: PathBuf::from(mount_point),
                fstype: after.split(' ').next().unwrap_or_default().to_owned(),
                shared: optional.iter().any(|f| f.starts_with("shared:")),
                slave: optional.iter().any(|f| f.starts_with("master:")),
            })
        })
        .collect()
}

/// Reads this process's mount table.
pub(crate) fn read() -> std::io::Result<Vec<MountEntry>> {
    std::fs::read_to_string(MOUNTINFO).map(|text| parse(&text))
}

/// The mount `path` (absolute, without links) is on: the one with the longest mount point above
/// it, the last of those when several are stacked there (the visible one).
pub(crate) fn containing<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| path.starts_with(&e.mount_point))
        .max_by_key(|(index, e)| (e.mount_point.components().count(), *index))
        .map(|(_, e)| e)
}

/// The kernel writes space, tab, newline and backslash in a path as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /srv rw,relatime shared:7 - ext4 /dev/vdb rw
31 30 0:27 / /srv/private rw,relatime - tmpfs tmpfs rw
32 30 0:28 / /srv/slave rw,relatime master:7 - tmpfs tmpfs rw
33 22 0:29 / /var/lib/my\\040volume rw,relatime - tmpfs tmpfs rw,size=1024k
34 33 0:30 / /var/lib/my\\040volume rw,relatime shared:9 - nfs :/export rw
not a mountinfo line
";

    #[test]
    fn parses_mount_points_types_and_propagation() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 6, "the malformed line is skipped");
        assert_eq!(
            entries[4],
            MountEntry {
                mount_point: "/var/lib/my volume".into(),
                fstype: "tmpfs".into(),
                shared: false,
                slave: false
            }
        );
        assert!(entries[0].shared && !entries[0].slave);
        assert!(entries[3].slave && !entries[3].shared);
    }

    #[test]
    fn finds_the_mount_a_path_is_on() {
        let entries = parse(SAMPLE);
        let on = |path: &str| containing(&entries, Path::new(path)).map(|e| e.mount_point.clone());
        assert_eq!(on("/srv/data/x"), Some("/srv".into()));
        assert_eq!(on("/srv/private/x"), Some("/srv/private".into()));
        assert_eq!(on("/srv/privatex"), Some("/srv".into()), "whole components only");
        assert_eq!(on("/etc"), Some("/".into()));
        let stacked = containing(&entries, Path::new("/var/lib/my volume/a")).map(|e| e.fstype.as_str());
        assert_eq!(stacked, Some("nfs"), "the last of stacked mounts is the visible one");
    }
}
