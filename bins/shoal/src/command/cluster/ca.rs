//! `shoal cluster ca [--rotate [--ca-cert FILE --ca-key FILE]] [--detach] [-q]`, as `docker swarm
//! ca`: prints the cluster's root CA certificate; with `--rotate`, replaces the root and follows
//! the nodes as they move to it (every node's certificate from the new root, then every node
//! trusting it alone), printing progress as docker does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use crate::command::api;

/// Between two looks at the rotation.
const POLL: Duration = Duration::from_millis(500);
/// Width of a progress bar, as docker's.
const BAR: usize = 50;

#[derive(Debug, Args)]
pub(crate) struct CaArgs {
    /// Rotate the root CA: to a new root, or to the one --ca-cert and --ca-key give.
    #[arg(long)]
    rotate: bool,
    /// The root CA certificate to rotate to (PEM file).
    #[arg(long, value_name = "FILE", requires = "rotate", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// Its private key (PEM file).
    #[arg(long, value_name = "FILE", requires = "rotate", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Return once the rotation has started, without waiting for the nodes.
    #[arg(long, short)]
    detach: bool,
    /// Print no progress.
    #[arg(long, short)]
    quiet: bool,
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read the {what} {}: {e}", path.display()))
}

/// `shoal cluster ca …`.
pub(crate) async fn run(control: &mut ControlClient<Channel>, args: CaArgs) -> anyhow::Result<()> {
    if args.rotate {
        let (ca_cert, ca_key) = match (&args.ca_cert, &args.ca_key) {
            (Some(cert), Some(key)) => (read_pem(cert, "root CA certificate")?, read_pem(key, "root CA key")?),
            _ => (Vec::new(), Vec::new()),
        };
        let started =
            control.rotate_root_ca(v1::RotateRootCaRequest { ca_cert, ca_key }).await.map_err(api)?.into_inner();
        if args.detach {
            if !args.quiet {
                println!("Root CA rotation started: desired root digest {}", started.desired_root);
                println!("`shoal cluster ca` shows how far the nodes are.");
            }
            return Ok(());
        }
    }
    let mut shown = status(control).await?;
    // Without --rotate, only a rotation under way is waited for (as docker does).
    if !args.detach && (args.rotate || shown.rotating) {
        shown = follow(control, args.quiet).await?;
    }
    print!("{}", String::from_utf8_lossy(&shown.signing_root));
    Ok(())
}

async fn status(control: &mut ControlClient<Channel>) -> anyhow::Result<v1::GetRootCaStatusResponse> {
    Ok(control.get_root_ca_status(v1::GetRootCaStatusRequest {}).await.map_err(api)?.into_inner())
}

/// Waits until no rotation is under way and every node trusts the root alone, printing the
/// progress whenever it moved (not redrawn in place: the output may be a file).
async fn follow(control: &mut ControlClient<Channel>, quiet: bool) -> anyhow::Result<v1::GetRootCaStatusResponse> {
    let mut last = String::new();
    loop {
        let status = status(control).await?;
        let converged = !status.rotating && status.trust_rotated >= status.nodes;
        let block = progress(&status);
        if !quiet && block != last && (status.rotating || !last.is_empty()) {
            print!("{block}");
        }
        if converged {
            return Ok(status);
        }
        last = block;
        tokio::time::sleep(POLL).await;
    }
}

/// docker's rotation progress: the desired root, then the certificates and the trust rotated.
pub(crate) fn progress(status: &v1::GetRootCaStatusResponse) -> String {
    let bar = |done: u32, total: u32| {
        let filled = if total == 0 { BAR } else { BAR * done.min(total) as usize / total as usize };
        let head = if filled >= BAR { String::new() } else { ">".to_owned() };
        let rest = BAR.saturating_sub(filled + head.len());
        format!("[{}{head}{}] {done}/{total} nodes", "=".repeat(filled), " ".repeat(rest))
    };
    let mut block = format!("desired root digest: {}\n", status.signing_root_fingerprint);
    block.push_str(&format!("  rotated TLS certificates:  {}\n", bar(status.certificates_rotated, status.nodes)));
    block.push_str(&format!("  rotated CA certificates:   {}\n", bar(status.trust_rotated, status.nodes)));
    if status.rotating && !status.pending_nodes.is_empty() {
        block.push_str(&format!("  waiting for: {}\n", status.pending_nodes.join(", ")));
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_drawn_as_docker_draws_it() {
        let status = v1::GetRootCaStatusResponse {
            signing_root_fingerprint: "sha256:ab".into(),
            rotating: true,
            nodes: 4,
            certificates_rotated: 2,
            trust_rotated: 0,
            pending_nodes: vec!["n3".into(), "n4".into()],
            ..Default::default()
        };
        let text = progress(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "desired root digest: sha256:ab");
        assert_eq!(lines[1], format!("  rotated TLS certificates:  [{}>{}] 2/4 nodes", "=".repeat(25), " ".repeat(24)));
        assert_eq!(lines[2], format!("  rotated CA certificates:   [>{}] 0/4 nodes", " ".repeat(49)));
        assert_eq!(lines[3], "  waiting for: n3, n4");
        let done = v1::GetRootCaStatusResponse {
            rotating: false,
            certificates_rotated: 4,
            trust_rotated: 4,
            pending_nodes: Vec::new(),
            ..status
        };
        let text = progress(&done);
        assert!(text.contains(&format!("[{}] 4/4 nodes", "=".repeat(50))), "{text}");
        assert!(!text.contains("waiting for"), "{text}");
    }
}
