//! Loops that keep a manager in line with the store by looking at it once a second (autolock's
//! keeper, the root CA follower): a pass that fails is tried again at the next tick, and only a
//! failure that lasts is worth a warning (a few in a row are an election or a start, with no
//! leader to confirm a read yet).

use std::future::Future;
use std::time::Duration;

/// Failed passes in a row after which a loop warns.
pub(crate) const WARN_AFTER: u32 = 10;

/// Runs `pass` every `period` until `stopped` resolves. `what` names the loop in its logs, and
/// `failing` says what a lasting failure means.
pub(crate) async fn every<Pass>(
    period: Duration,
    what: &'static str,
    failing: &'static str,
    stopped: impl Future<Output = ()>,
    mut pass: impl FnMut() -> Pass,
) where
    Pass: Future<Output = Result<(), String>>,
{
    tokio::pin!(stopped);
    let mut failed = 0u32;
    loop {
        match pass().await {
            Ok(()) => failed = 0,
            Err(reason) => {
                failed += 1;
                if failed == WARN_AFTER {
                    tracing::warn!(%reason, "{what}: {failing}; trying again");
                } else {
                    tracing::debug!(%reason, failed, "{what}: pass failed");
                }
            }
        }
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}
