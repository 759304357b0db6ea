//! Errors become `tonic::Status` here, at the API edge, with the code a client can act on and a
//! message that names the object.

use shoal_raft_store::{ReadError, WriteError};
use tonic::{Code, Status};

use crate::objects::ObjectError;
use crate::validate::SpecError;

/// The message every request gets while the managers cannot form a quorum.
pub(crate) const NO_QUORUM: &str = "no quorum: the managers cannot elect a leader (fewer than half are reachable); bring managers back, or if they are lost for good, restart one survivor with `shoal-manager run --force-new-cluster` (it keeps the cluster's state and becomes its only manager)";

impl From<ObjectError> for Status {
    fn from(err: ObjectError) -> Self {
        let code = match &err {
            ObjectError::NotFound { .. } => Code::NotFound,
            ObjectError::Exists { .. } | ObjectError::NameTaken { .. } => Code::AlreadyExists,
            // gRPC's code for a failed test-and-set: redo the read-modify-write.
            ObjectError::Conflict { .. } => Code::Aborted,
            ObjectError::Corrupt { .. } => Code::DataLoss,
            ObjectError::Fenced { .. } => Code::Unavailable,
            ObjectError::Read(read) => return read_status(read),
            ObjectError::Write(write) => return write_status(write),
        };
        Status::new(code, err.to_string())
    }
}

impl From<SpecError> for Status {
    fn from(err: SpecError) -> Self {
        Status::invalid_argument(err.to_string())
    }
}

/// The Raft leader's address (HOST:PORT) as `store` knows it, for messages that send a caller
/// there.
pub(crate) fn leader_addr(store: &shoal_raft_store::Store) -> Option<String> {
    let view = store.local_status();
    view.leader.and_then(|id| view.members.into_iter().find(|m| m.id == id)).map(|m| m.addr)
}

fn read_status(err: &ReadError) -> Status {
    match err {
        ReadError::NoQuorum { .. } | ReadError::Timeout { .. } => Status::unavailable(format!("{NO_QUORUM} ({err})")),
        ReadError::Stopped { .. } => Status::unavailable(err.to_string()),
    }
}

fn write_status(err: &WriteError) -> Status {
    match err {
        WriteError::NotLeader { leader: None } | WriteError::Unconfirmed { .. } => {
            Status::unavailable(format!("{NO_QUORUM} ({err})"))
        }
        other => Status::unavailable(other.to_string()),
    }
}
