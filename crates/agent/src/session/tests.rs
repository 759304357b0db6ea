//! The failover policy: which manager next, and how long to wait.

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
        waits.push(failover.after_broken(false, None));
    }
    assert_eq!(tried, ["a:2377", "b:2377", "a:2377", "b:2377", "a:2377", "b:2377", "a:2377", "b:2377"]);
    assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200), ms(6400), ms(8000)]);
}

#[test]
fn a_session_that_had_started_starts_the_wait_over() {
    let mut failover = Failover::new(vec!["a:2377".into()]);
    for _ in 0..10 {
        failover.after_broken(false, None);
    }
    assert_eq!(failover.after_broken(false, None), ms(8000));
    // Days later, the established session breaks: the node must be back within a heartbeat
    // deadline, not 8 s later.
    assert_eq!(failover.after_broken(true, None), ms(100));
    assert_eq!(failover.after_broken(false, None), ms(200));
}

#[test]
fn a_refusal_naming_the_leader_sends_the_next_attempt_there() {
    let mut failover = Failover::new(vec!["follower:2377".into()]);
    assert_eq!(failover.pick(), "follower:2377");
    assert_eq!(failover.after_broken(false, Some("leader:2377".into())), ms(100));
    assert_eq!(failover.pick(), "leader:2377");
    failover.learn(["leader:2377".to_owned(), String::new(), "other:2377".to_owned()]);
    assert_eq!(failover.managers, ["follower:2377", "leader:2377", "other:2377"]);
}
