//! Doing the mesh's work inside a network namespace: a short-lived thread that entered it runs
//! `nft` and `ip` (a child process belongs to its parent thread's namespace) and writes sysctls
//! (`/proc/sys/net` shows the namespace of the thread that opens it).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::MeshError;

/// How a namespace is named in errors and logs.
pub(crate) fn describe(netns: Option<&Path>) -> String {
    netns.map_or_else(|| "(current)".to_owned(), |path| path.display().to_string())
}

/// Runs `f` on a fresh thread that has entered the network namespace at `netns` (on the
/// calling thread when `None`). `f` gets the namespace's description for its errors.
pub(crate) fn in_netns<T: Send>(
    netns: Option<&Path>,
    f: impl FnOnce(&str) -> Result<T, MeshError> + Send,
) -> Result<T, MeshError> {
    let name = describe(netns);
    let Some(path) = netns else { return f(&name) };
    let enter_error = |source: std::io::Error| MeshError::Netns { netns: name.clone(), source };
    let file = File::open(path).map_err(enter_error)?;
    std::thread::scope(|scope| {
        let joined = std::thread::Builder::new()
            .name("shoal-mesh-netns".to_owned())
            .spawn_scoped(scope, || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| enter_error(errno.into()))?;
                f(&name)
            })
            .map_err(enter_error)?
            .join();
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `program args…` (with `stdin` on its standard input) to completion in the calling
/// thread's namespace and returns its output, whatever its exit status.
pub(crate) fn run(netns: &str, program: &'static str, args: &[&str], stdin: Option<&str>) -> Result<Output, MeshError> {
    let spawn_error = |source| MeshError::Spawn { netns: netns.to_owned(), program, source };
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the program's own error (it read a truncated input);
        // dropping the pipe closes it.
        let _ = pipe.write_all(text.as_bytes());
    }
    child.wait_with_output().map_err(spawn_error)
}

/// The trimmed standard error of a finished program (its standard output if that is empty).
pub(crate) fn stderr_of(output: &Output) -> String {
    let err = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if err.is_empty() { String::from_utf8_lossy(&output.stdout).trim().to_owned() } else { err }
}

/// Sets `/proc/sys/<key>` (e.g. `net/ipv4/ip_forward`) to `value` in the calling thread's
/// namespace unless it already has it. Returns whether it was changed.
pub(crate) fn set_sysctl(netns: &str, key: &str, value: &str) -> Result<bool, MeshError> {
    let path = Path::new("/proc/sys").join(key);
    let error =
        |source| MeshError::Sysctl { netns: netns.to_owned(), key: key.to_owned(), value: value.to_owned(), source };
    if std::fs::read_to_string(&path).map_err(error)?.trim() == value {
        return Ok(false);
    }
    std::fs::write(&path, value).map_err(error)?;
    Ok(true)
}
