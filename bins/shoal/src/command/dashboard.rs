//! `shoal dashboard`: the cluster at a glance in a browser, live.
//!
//! The CLI serves the page on the operator's machine and talks to the manager with the
//! operator's own client bundle, as `kubectl proxy` does: managers open no port for it and no
//! browser ever holds a cluster certificate. The page (plain HTML, CSS and JavaScript embedded
//! in the binary; nothing fetched from elsewhere) shows the nodes × tasks grid, services with
//! their update progress, a service's tasks and their history, networks, nodes and the event
//! stream, kept current by server-sent events from the manager's event stream (`state`); its
//! buttons scale a service, roll it back and drain or activate a node, each after a
//! confirmation (`actions`). Access takes the token in the printed URL (`http`).

mod actions;
mod http;
mod state;
#[cfg(test)]
mod tests;
mod view;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use shoal_api::v1::control_client::ControlClient;
use tonic::transport::Channel;

use super::MAX_ANSWER_BYTES;

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Where to serve the page, IP:PORT (port 0: any free one). Loopback only unless
    /// --allow-remote.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// Serve on an address other machines can reach. Whoever opens the printed URL acts on the
    /// cluster with your client bundle; the traffic is plain HTTP.
    #[arg(long)]
    allow_remote: bool,
}

/// Why a listen address is refused, if it is.
fn refused_listen(listen: SocketAddr, allow_remote: bool) -> Option<String> {
    (!listen.ip().is_loopback() && !allow_remote).then(|| {
        format!(
            "--listen {listen} is not a loopback address: anyone who reaches it could act on the cluster with your \
             client bundle; add --allow-remote if that is what you want, or listen on 127.0.0.1:{}",
            listen.port()
        )
    })
}

/// A fresh access token: 32 random bytes, hex.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) async fn dashboard(host: &str, channel: Channel, args: &DashboardArgs) -> anyhow::Result<()> {
    if let Some(refused) = refused_listen(args.listen, args.allow_remote) {
        anyhow::bail!(refused);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}: pick another address with --listen (port 0 takes any free one)", args.listen)
    })?;
    let bound = listener.local_addr().context("the listening socket has no address")?;
    let token = new_token()?;
    if !bound.ip().is_loopback() {
        eprintln!(
            "warning: serving on {bound}, which other machines can reach: whoever opens the URL below acts on the \
             cluster with your client bundle, over plain HTTP"
        );
    }
    let hub = state::Hub::new(host);
    let watch = tokio::spawn(state::watch(Arc::clone(&hub), channel.clone()));
    let control = ControlClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
    let server = Arc::new(http::Server { hub, control, token: token.clone(), port: bound.port() });
    // The URL is for whoever started the command; if nobody reads the output any more (a
    // closed pipe), the dashboard still serves.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "Dashboard of the cluster at {host}: http://{bound}/?token={token}");
    let _ = writeln!(stdout, "Open it in a browser; stop with Ctrl-C.");
    let _ = stdout.flush();
    drop(stdout);
    tokio::select! {
        served = http::serve(listener, server) => served.context("the dashboard stopped accepting connections"),
        // It loops for ever: ending means it panicked, and the page would show stale data as live.
        ended = watch => anyhow::bail!("the dashboard stopped following the cluster: {ended:?}"),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
