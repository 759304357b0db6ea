//! The task state machine's order: a task's state only moves forward, to a larger value.

use crate::v1::{Task, TaskState};

impl Task {
    /// The state the node last reported (NEW when none was).
    pub fn observed_state(&self) -> TaskState {
        self.status.as_ref().and_then(|s| TaskState::try_from(s.state).ok()).unwrap_or(TaskState::New)
    }

    /// The state the manager wants (NEW for a value this version does not know).
    pub fn desired(&self) -> TaskState {
        TaskState::try_from(self.desired_state).unwrap_or(TaskState::New)
    }
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 14] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ];

    /// Whether `next` may follow `self` (states only move forward; REMOVE and ORPHANED are
    /// reachable from any state, as the manager decides them).
    pub fn may_become(self, next: TaskState) -> bool {
        (next as i32) > (self as i32)
    }

    /// Whether the task's container has ended for good (COMPLETE and after).
    pub fn is_terminal(self) -> bool {
        (self as i32) >= (TaskState::Complete as i32)
    }

    /// The word `docker service ps` shows: `Running`, `Shutdown`, `Failed` …
    pub fn label(self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: [TaskState; 14] = TaskState::ALL;

    #[test]
    fn states_only_move_forward() {
        for (i, from) in ORDER.iter().enumerate() {
            for (j, to) in ORDER.iter().enumerate() {
                assert_eq!(from.may_become(*to), j > i, "{} -> {}", from.label(), to.label());
            }
        }
    }

    #[test]
    fn a_task_reads_its_states() {
        let mut task = Task::default();
        assert_eq!((task.observed_state(), task.desired()), (TaskState::New, TaskState::New));
        task.desired_state = TaskState::Running as i32;
        task.status = Some(crate::v1::TaskStatus { state: TaskState::Failed as i32, ..Default::default() });
        assert_eq!((task.observed_state(), task.desired()), (TaskState::Failed, TaskState::Running));
        task.desired_state = 12_345;
        assert_eq!(task.desired(), TaskState::New, "an unknown value reads as NEW");
    }

    #[test]
    fn terminal_states_and_labels() {
        let terminal: Vec<&str> = ORDER.iter().filter(|s| s.is_terminal()).map(|s| s.label()).collect();
        assert_eq!(terminal, ["Complete", "Shutdown", "Failed", "Rejected", "Remove", "Orphaned"]);
        // Labels are the proto names in docker's capitalisation.
        for state in ORDER {
            let proto = state.as_str_name().trim_start_matches("TASK_STATE_").to_ascii_lowercase();
            assert_eq!(state.label().to_ascii_lowercase(), proto);
        }
    }
}
