//! Tests of the replication stream: entry-less appends do not hold up the next request, appends
//! with entries go one at a time, answers come back in request order.

use std::sync::Mutex;

use openraft::EntryPayload;
use openraft::impls::leader_id_adv::LeaderId;

use super::*;
use crate::types::Entry;

/// Answers every append with success: entry-less ones after `slow`, others at once; records when
/// each request left and was answered.
struct FakeTransport {
    slow: Duration,
    events: Arc<Mutex<Vec<String>>>,
}

impl Transport for FakeTransport {
    fn send(
        &self,
        _from: NodeId,
        _target: NodeId,
        _addr: &str,
        _kind: MessageKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let req: AppendEntriesRequest<TypeConfig> = decode(&payload).expect("an append");
        let name = req.entries.last().map_or_else(|| "empty".to_owned(), |e| format!("to {}", e.log_id.index));
        let delay = if req.entries.is_empty() { self.slow } else { Duration::from_millis(5) };
        self.events.lock().expect("events").push(format!("send {name}"));
        let events = self.events.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            events.lock().expect("events").push(format!("answer {name}"));
            Ok(encode(&AppendEntriesResponse::<TypeConfig>::Success))
        })
    }
}

fn log_id(index: u64) -> LogId {
    LogId::new(LeaderId { term: 1, node_id: 1 }, index)
}

fn append(prev: u64, entries: &[u64]) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: Some(log_id(prev)),
        entries: entries.iter().map(|i| Entry { log_id: log_id(*i), payload: EntryPayload::Blank }).collect(),
        leader_commit: Some(log_id(prev)),
    }
}

/// Runs `input` through a replication stream to member 2 over `transport`; the matched log IDs.
async fn stream(
    transport: &Arc<FakeTransport>,
    input: impl futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin + Send + 'static,
) -> Vec<Option<LogId>> {
    let mut conn = Connection {
        node: 1,
        min_ttl: Duration::from_secs(1),
        target: 2,
        addr: "fake".into(),
        transport: transport.clone(),
    };
    let answers: Vec<_> = {
        let stream = conn.stream_append(input, RPCOption::new(Duration::from_secs(1))).await.expect("stream");
        stream.collect().await
    };
    answers.into_iter().map(|a| a.expect("answered").expect("success")).collect()
}

#[tokio::test]
async fn entries_go_out_while_an_entry_less_append_is_unanswered_and_answers_keep_their_order() {
    let transport = Arc::new(FakeTransport { slow: Duration::from_millis(300), events: Arc::default() });
    // A commit-only append, then entries 6..=7 after it, then entry 8 after those.
    let input = futures::stream::iter(vec![append(5, &[]), append(5, &[6, 7]), append(7, &[8])]);
    let answers = stream(&transport, input).await;
    assert_eq!(answers, vec![Some(log_id(5)), Some(log_id(7)), Some(log_id(8))]);
    let events = transport.events.lock().expect("events").clone();
    // Entries 6..=7 left with the commit-only append unanswered; entry 8 only once every answer
    // before it was in (answers are taken in request order).
    assert_eq!(events, ["send empty", "send to 7", "answer to 7", "answer empty", "send to 8", "answer to 8"]);
}

#[tokio::test]
async fn appends_with_entries_are_never_in_flight_together() {
    let transport = Arc::new(FakeTransport { slow: Duration::from_millis(1), events: Arc::default() });
    let input = futures::stream::iter(vec![append(5, &[6]), append(6, &[7]), append(7, &[8])]);
    let answers = stream(&transport, input).await;
    assert_eq!(answers, vec![Some(log_id(6)), Some(log_id(7)), Some(log_id(8))]);
    let events = transport.events.lock().expect("events").clone();
    assert_eq!(events, ["send to 6", "answer to 6", "send to 7", "answer to 7", "send to 8", "answer to 8"]);
}
