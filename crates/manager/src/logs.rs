//! The log broker (`shoal service logs`): subscriptions of CLI callers fanned out to the agents
//! that hold the tasks, and the lines they publish fanned back in.

/// The stream of log subscriptions a node's agent reads during its session.
pub(crate) type NodeSubscriptionStream =
    tokio_stream::wrappers::ReceiverStream<Result<shoal_api::v1::LogSubscriptionsMessage, tonic::Status>>;
