//! Opening sockets inside other network namespaces.
//!
//! A socket belongs to the namespace of the thread that created it, for its whole life, wherever
//! it is later polled. So: enter the namespace on a thread of our own (never a tokio worker, which
//! other tasks share), create the socket there, and hand it to the runtime.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Why work could not be done inside a namespace.
#[derive(Debug)]
pub(crate) enum NetnsFailure<E> {
    /// The namespace file could not be opened.
    Open(io::Error),
    /// `setns` refused it.
    Enter(nix::Error),
    /// The work itself failed.
    Work(E),
    /// The thread went away without an answer (it panicked).
    Lost,
}

/// Runs `work` on a fresh thread that has entered the network namespace at `path`.
pub(crate) async fn run_in<T, E>(
    path: &Path,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, NetnsFailure<E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let file = File::open(path).map_err(NetnsFailure::Open)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dns-netns".into())
        .spawn(move || {
            let result = match nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                Ok(()) => work().map_err(NetnsFailure::Work),
                Err(errno) => Err(NetnsFailure::Enter(errno)),
            };
            // The caller may have given up (its future dropped); nothing to do then.
            let _ = tx.send(result);
        })
        .map_err(|err| NetnsFailure::Open(io::Error::other(err)))?;
    rx.await.unwrap_or(Err(NetnsFailure::Lost))
}

type Job = Box<dyn FnOnce() + Send>;

/// A long-lived thread inside one namespace that runs small jobs, such as creating the socket of
/// each forwarded query (a fresh port per query, as resolvers should).
#[derive(Debug, Clone)]
pub(crate) struct NetnsWorker {
    jobs: mpsc::Sender<Job>,
}

impl NetnsWorker {
    /// Starts the thread and waits until it is inside `path`.
    pub(crate) fn start(path: &Path) -> Result<Self, (PathBuf, io::Error)> {
        let file = File::open(path).map_err(|e| (path.to_owned(), e))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("dns-upstream-netns".into())
            .spawn(move || {
                let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if ok {
                    // Ends when every sender (every clone of the worker) is gone.
                    for job in queue {
                        job();
                    }
                }
            })
            .map_err(|e| (path.to_owned(), e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { jobs }),
            Ok(Err(errno)) => Err((path.to_owned(), errno.into())),
            Err(_) => Err((path.to_owned(), io::Error::other("namespace thread exited"))),
        }
    }

    /// Runs `work` on the namespace thread and returns its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(work());
            }))
            .map_err(|_| io::Error::other("upstream namespace thread is gone"))?;
        rx.await.unwrap_or_else(|_| Err(io::Error::other("upstream namespace thread dropped a job")))
    }
}
