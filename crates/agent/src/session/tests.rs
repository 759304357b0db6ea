//! The failover policy (which manager next, and how long to wait) and the assignment stream as
//! the agent follows it (complete sets in parts, increments in sequence).

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn managers_are_tried_in_turn_with_a_doubling_wait() {
    let mut failover = Failover::new(vec!["a:2377".into(), "b:2377".into()]);
    let mut tried = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..8 {
        tried.push(failover.pick());
        waits.push(failover.after_broken("a:2377", false, None));
    }
    assert_eq!(tried, ["a:2377", "b:2377", "a:2377", "b:2377", "a:2377", "b:2377", "a:2377", "b:2377"]);
    assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200), ms(6400), ms(8000)]);
}

#[test]
fn a_session_that_had_started_starts_the_wait_over() {
    let mut failover = Failover::new(vec!["a:2377".into()]);
    for _ in 0..10 {
        failover.after_broken("a:2377", false, None);
    }
    assert_eq!(failover.after_broken("a:2377", false, None), ms(8000));
    // Days later, the established session breaks: the node must be back within a heartbeat
    // deadline, not 8 s later.
    assert_eq!(failover.after_broken("a:2377", true, None), ms(100));
    assert_eq!(failover.after_broken("a:2377", false, None), ms(200));
}

/// After a leader change the new leader waits three heartbeat periods for each node: a node
/// that knows the period never waits longer than one between attempts.
#[test]
fn the_wait_never_exceeds_the_heartbeat_period_once_known() {
    let mut failover = Failover::new(vec!["a:2377".into()]);
    failover.heartbeat = Some(ms(300));
    let waits: Vec<Duration> = (0..6).map(|_| failover.after_broken("a:2377", false, None)).collect();
    assert_eq!(waits, [ms(100), ms(200), ms(300), ms(300), ms(300), ms(300)]);
}

#[test]
fn a_follower_naming_a_leader_that_just_failed_does_not_send_the_agent_back_there() {
    // n1 (the old leader) died; n3 has not heard yet and names it; n2 leads now.
    let mut failover = Failover::new(vec!["n1:2377".into(), "n2:2377".into(), "n3:2377".into()]);
    assert_eq!(failover.pick(), "n1:2377");
    failover.after_broken("n1:2377", false, None);
    assert_eq!(failover.pick(), "n2:2377");
    failover.after_broken("n2:2377", false, Some("n3:2377".into()));
    assert_eq!(failover.pick(), "n3:2377");
    failover.after_broken("n3:2377", false, Some("n1:2377".into()));
    assert_eq!(failover.pick(), "n1:2377", "round robin goes on");
    failover.after_broken("n1:2377", false, None);
    assert_eq!(failover.pick(), "n2:2377", "not back to n1 because n3 named it");
    tracing::info!("--- a session starts: the next hint is followed again");
    failover.started("n2:2377", &["n1:2377".into(), "n2:2377".into(), "n3:2377".into()]);
    assert!(failover.unreachable.is_empty());
}

#[test]
fn a_refusal_naming_the_leader_sends_the_next_attempt_there() {
    let mut failover = Failover::new(vec!["follower:2377".into()]);
    assert_eq!(failover.pick(), "follower:2377");
    assert_eq!(failover.after_broken("follower:2377", false, Some("leader:2377".into())), ms(100));
    assert_eq!(failover.pick(), "leader:2377");
    failover.learn(["leader:2377".to_owned(), String::new(), "other:2377".to_owned()]);
    assert_eq!(failover.managers, ["follower:2377", "leader:2377", "other:2377"]);
}

fn message(kind: v1::assignments_message::Type, applies_to: u64, ids: &[&str], more: bool) -> v1::AssignmentsMessage {
    let changes = ids
        .iter()
        .map(|id| v1::AssignmentChange {
            action: v1::assignment_change::Action::Update as i32,
            task: Some(v1::Task { id: (*id).into(), ..Default::default() }),
            ..Default::default()
        })
        .collect();
    v1::AssignmentsMessage { r#type: kind as i32, applies_to, results_in: applies_to + 1, changes, more }
}

fn ids(assigned: &Assigned) -> Vec<String> {
    match assigned {
        Assigned::Wait => Vec::new(),
        Assigned::Complete(tasks, _) => tasks.iter().map(|t| t.id.clone()).collect(),
        Assigned::Changes(changes) => changes.iter().filter_map(|c| c.task.as_ref()).map(|t| t.id.clone()).collect(),
    }
}

#[test]
fn a_complete_set_in_parts_is_applied_when_its_last_part_arrives() {
    use v1::assignments_message::Type::{Complete, Incremental};
    let mut state = AssignmentState::default();
    assert_eq!(state.receive(message(Complete, 0, &["a", "b"], true)), Ok(Assigned::Wait));
    assert_eq!(state.receive(message(Complete, 0, &["c"], true)), Ok(Assigned::Wait));
    let complete = state.receive(message(Complete, 0, &["d"], false)).expect("the last part");
    assert!(matches!(complete, Assigned::Complete(..)));
    assert_eq!(ids(&complete), ["a", "b", "c", "d"], "every part, in order");
    let increment = state.receive(message(Incremental, 1, &["e"], false)).expect("applies to set 1");
    assert_eq!(ids(&increment), ["e"]);
    assert!(matches!(increment, Assigned::Changes(_)));
    assert_eq!(ids(&state.receive(message(Incremental, 2, &["f"], false)).expect("set 2")), ["f"]);

    tracing::info!("--- a complete set in one message, as before parts existed");
    let mut state = AssignmentState::default();
    assert_eq!(ids(&state.receive(message(Complete, 0, &["a"], false)).expect("whole")), ["a"]);
    assert_eq!(
        state.receive(message(Complete, 0, &[], false)),
        Ok(Assigned::Complete(Vec::new(), Vec::new())),
        "an empty set"
    );
}

#[test]
fn a_stream_out_of_order_ends_the_session() {
    use v1::assignments_message::Type::{Complete, Incremental};
    let cases: Vec<(Vec<v1::AssignmentsMessage>, &str)> = vec![
        (vec![message(Incremental, 1, &["a"], false)], "an increment applies to set 1, this node holds set none yet"),
        (
            vec![message(Complete, 0, &["a"], true), message(Incremental, 1, &["b"], false)],
            "an increment arrived before the last part of complete set 1",
        ),
        (
            vec![message(Complete, 0, &["a"], false), message(Incremental, 2, &["b"], false)],
            "an increment applies to set 2, this node holds set 1",
        ),
        (
            vec![message(Complete, 0, &["a"], false), message(Incremental, 1, &["b"], true)],
            "increment 1 says more parts follow; only complete sets have parts",
        ),
        (
            vec![message(Complete, 0, &["a"], true), message(Complete, 4, &["b"], false)],
            "a part of complete set 5 arrived before the last part of complete set 1",
        ),
        (vec![v1::AssignmentsMessage { r#type: 7, ..Default::default() }], "unknown assignment message type 7"),
    ];
    for (messages, expected) in cases {
        let mut state = AssignmentState::default();
        let mut outcome = Ok(Assigned::Wait);
        for m in messages {
            outcome = state.receive(m);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(expected.to_owned()));
    }
}

#[test]
fn a_session_that_starts_puts_its_manager_first_and_the_next_after_it() {
    let mut failover = Failover::new(vec!["m1:2377".into(), "m2:2377".into(), "m3:2377".into()]);
    failover.pick();
    failover.after_broken("a:2377", false, None);
    assert_eq!(failover.pick(), "m2:2377");
    // m2 answers and names the cluster's managers, m3 no longer among them.
    failover.started("m2:2377", &["m1:2377".into(), "m2:2377".into(), "m4:2377".into()]);
    assert_eq!(failover.managers, ["m2:2377", "m1:2377", "m4:2377"]);
    // Its session breaks: the others are tried before it again.
    failover.after_broken("a:2377", true, None);
    assert_eq!([failover.pick(), failover.pick(), failover.pick()], ["m1:2377", "m4:2377", "m2:2377"]);
}
