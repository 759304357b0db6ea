//! Which network namespace a load balancer programs, and running work inside it.

use std::fmt;
use std::fs::File;
use std::path::PathBuf;

/// A network namespace: the caller's own, or one named by a path (`/run/netns/NAME`,
/// `/proc/PID/ns/net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The namespace of the calling thread.
    Current,
    /// The namespace behind this file.
    Path(PathBuf),
}

impl Netns {
    /// The namespace `ip netns add NAME` made (`/run/netns/NAME`).
    pub fn named(name: &str) -> Self {
        Self::Path(PathBuf::from("/run/netns").join(name))
    }

    /// Runs `f` in this namespace: on the calling thread for [`Netns::Current`], otherwise on a
    /// fresh thread that has entered it (sockets opened and processes spawned there belong to it).
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, std::io::Error> {
        let path = match self {
            Self::Current => return Ok(f()),
            Self::Path(path) => path,
        };
        let file = File::open(path)?;
        std::thread::scope(|scope| {
            let joined = scope
                .spawn(move || nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map(|()| f()))
                .join();
            match joined {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(errno)) => Err(errno.into()),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("(current)"),
            Self::Path(path) => write!(f, "{}", path.display()),
        }
    }
}
