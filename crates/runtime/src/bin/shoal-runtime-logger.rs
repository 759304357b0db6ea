//! The logging process containerd's shim starts for each container (`binary://` log URI):
//! copies the container's stdout (fd 3) and stderr (fd 4) into a JSON-lines file.

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};

use shoal_runtime::logs::{DriverArgs, run_driver};

fn main() -> ExitCode {
    let args = match DriverArgs::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            // The shim records a failed logger's stderr in its own log.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("shoal-runtime-logger: {message}");
            }
            return ExitCode::from(2);
        }
    };
    // The shim holds the write ends of our pipes until the task is deleted; then it closes them,
    // sends SIGTERM and waits for this process to exit (up to 12 s, then SIGKILL). The closed
    // pipes end the copying anyway, while dying of the SIGTERM could lose the lines still in
    // them. With SIGTERM blocked (the threads inherit the mask), deleting a task waits until
    // its log is complete.
    if let Err(err) = SigSet::from(Signal::SIGTERM).thread_block() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("shoal-runtime-logger: block SIGTERM: {err}");
        }
    }
    // SAFETY: the shim starts this process with its stdout/stderr pipes on fds 3 and 4 and the
    // ready pipe on fd 5, and nothing else in this process uses those descriptors.
    match unsafe { run_driver(&args) } {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("shoal-runtime-logger: {}: {err}", args.path.display());
            }
            ExitCode::FAILURE
        }
    }
}
