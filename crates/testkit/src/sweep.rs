//! Sweeping what killed test runs left behind: namespaces, processes, mounts, cgroups and
//! directories whose names start with [`RUN_PREFIX_ROOT`](crate::RUN_PREFIX_ROOT).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::RUN_PREFIX_ROOT;
use crate::cmd;
use crate::netns::kill_netns_processes;

/// What [`sweep`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Network namespaces deleted.
    pub namespaces: Vec<String>,
    /// Processes killed outside namespaces (containerd, shims, registries).
    pub processes: Vec<u32>,
    /// Directories removed.
    pub dirs: Vec<PathBuf>,
    /// cgroups removed.
    pub cgroups: Vec<PathBuf>,
}

/// Removes every leftover of earlier runs: namespaces (with their processes, links and rules),
/// processes whose command line names a leftover directory, mounts and directories under the
/// temp dir, and cgroups of containers in leftover containerd namespaces. Safe to run while no
/// test runs; it would tear down a running test's harness too.
pub fn sweep() -> SweepReport {
    sweep_prefix(RUN_PREFIX_ROOT)
}

/// Like [`sweep`], for the leftovers whose names start with `prefix` only (one run, or the demo).
pub fn sweep_prefix(prefix: &str) -> SweepReport {
    let mut report = SweepReport::default();
    let listed = cmd::run(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for netns in listed.lines().filter_map(|l| l.split_whitespace().next()) {
        if netns.starts_with(prefix) {
            kill_netns_processes(netns);
            if cmd::run(Command::new("ip").args(["netns", "delete", netns])).is_ok() {
                report.namespaces.push(netns.to_owned());
            }
        }
    }
    let tmp = std::env::temp_dir();
    let dirs: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    for dir in dirs {
        report.processes.extend(kill_processes_mentioning(&dir));
        unmount_under(&dir);
        if std::fs::remove_dir_all(&dir).is_ok() {
            report.dirs.push(dir);
        }
    }
    report.cgroups = remove_cgroups(Path::new("/sys/fs/cgroup"), prefix);
    report
}

/// SIGKILLs every process whose command line mentions `dir`; returns their PIDs.
pub(crate) fn kill_processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut killed = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            let Ok(raw) = i32::try_from(pid) else { continue };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed
}

/// Lazily unmounts every mount point at or under `dir`, deepest first.
pub(crate) fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes cgroups named after a run (containerd namespaces are the run prefix), killing what
/// is left in them. Handles cgroup v1 controller hierarchies and the v2 unified tree.
pub(crate) fn remove_cgroups(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut hierarchies = vec![root.to_owned()];
    hierarchies.extend(std::fs::read_dir(root).into_iter().flatten().flatten().map(|e| e.path()));
    let mut removed = Vec::new();
    for hierarchy in hierarchies {
        for entry in std::fs::read_dir(&hierarchy).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                remove_cgroup_tree(&entry.path(), &mut removed);
            }
        }
    }
    removed
}

fn remove_cgroup_tree(dir: &Path, removed: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path(), removed);
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    if std::fs::remove_dir(dir).is_ok() {
        removed.push(dir.to_owned());
    }
}
