//! Runs one container through containerd and prints its output:
//!
//! ```sh
//! cargo build -p shoal-runtime --bin shoal-runtime-logger
//! cargo xtask images                      # test images into target/shoal-images/
//! sudo target/debug/examples/run_container /run/containerd/containerd.sock \
//!     target/shoal-images/tools.tar echo hello from a container
//! ```
//!
//! The second argument is an OCI archive path or a registry reference.

// An example program: printing is its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use shoal_runtime::{ContainerRuntime, ContainerSpec, Containerd, ContainerdConfig, ImageSource, LogOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: run_container SOCKET IMAGE_ARCHIVE_OR_REFERENCE [COMMAND...]";
    let socket = args.next().ok_or(usage)?;
    let image = args.next().ok_or(usage)?;
    let command: Vec<String> = args.collect();

    // The logger is a binary of this crate; by default look next to this example's directory.
    let logger = std::env::var_os("SHOAL_RUNTIME_LOGGER").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.parent().and_then(|d| d.parent()).map(|d| d.join("shoal-runtime-logger")).unwrap_or_default()
    });
    if !logger.is_file() {
        return Err(format!(
            "logger {} not found: build it with `cargo build -p shoal-runtime --bin shoal-runtime-logger` or set SHOAL_RUNTIME_LOGGER",
            logger.display()
        )
        .into());
    }
    let state = std::env::temp_dir().join("shoal-runtime-example");
    let runtime = Containerd::connect(ContainerdConfig::new(socket, "shoal-example", &state, logger)).await?;

    let source = if std::path::Path::new(&image).exists() {
        ImageSource::Archive { path: image.into(), reference: None }
    } else {
        ImageSource::registry(image)
    };
    let image = runtime.ensure_image(&source).await?;
    let spec = ContainerSpec {
        id: format!("example-{}", std::process::id()),
        image,
        entrypoint: (!command.is_empty()).then_some(command),
        args: Some(Vec::new()),
        ..ContainerSpec::default()
    };
    runtime.create(&spec).await?;
    runtime.start(&spec.id).await?;
    let mut logs = runtime.logs(&spec.id, &LogOptions { follow: true, ..LogOptions::default() }).await?;
    while let Some(line) = logs.next().await {
        println!("{}", line.line);
    }
    let status = runtime.stop(&spec.id, Duration::from_secs(10)).await?;
    runtime.remove(&spec.id).await?;
    println!("exited with {}", status.code);
    Ok(())
}
