//! What the subscribers saw, and the checks every chaos test ends with: one strictly
//! increasing rev sequence per topic on every hub, the same tag at the same rev everywhere,
//! every acknowledged write at its rev, no write applied twice, and every hub's final
//! state equal to the log's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use statecast_testkit::{Server, Ws};
use tokio_tungstenite::tungstenite::Message;

use super::load::{Answer, Sent};

/// A WebSocket subscriber of `pattern` on one hub, reading everything in the background.
pub struct Watcher {
    pub hub: usize,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Watcher {
    /// Subscribes on `server` (before any write: the topics' creation is the first thing
    /// it sees).
    pub async fn start(hub: usize, server: &Server, pattern: &str) -> Watcher {
        let mut ws = server.ws().await;
        let mut answer = ws
            .request(json!({"type": "subscribe", "id": "sub", "patterns": [pattern]}))
            .await;
        let result = answer.pop().expect("a result");
        assert_eq!(result["ok"], true, "subscribe: {result}");
        let seen = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(read(ws, Arc::clone(&seen), Arc::clone(&stop)));
        Watcher {
            hub,
            seen,
            stop,
            task,
        }
    }

    /// The highest rev seen per topic.
    pub fn revs(&self) -> HashMap<String, u64> {
        let mut revs = HashMap::new();
        for m in self.seen.lock().unwrap().iter() {
            if let (Some(topic), Some(rev)) = (m["topic"].as_str(), m["rev"].as_u64()) {
                let at = revs.entry(topic.to_string()).or_insert(0);
                *at = rev.max(*at);
            }
        }
        revs
    }

    /// Waits (up to `limit`) until this subscriber has seen every topic of `want` at its
    /// rev, then stops reading and returns what it saw. Fails if the hub ended the
    /// subscription meanwhile.
    pub async fn finish(self, want: &HashMap<String, u64>, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let revs = self.revs();
            if want.iter().all(|(t, r)| revs.get(t) == Some(r)) {
                break;
            }
            assert!(
                !self.task.is_finished() && Instant::now() < deadline,
                "hub {}'s subscriber is at {revs:?}, not {want:?}, after {limit:?}",
                self.hub
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let ended = self.task.await.expect("the subscriber task");
        ended.unwrap_or_else(|e| panic!("hub {}'s subscriber: {e}", self.hub));
        self.seen.lock().unwrap().clone()
    }
}

/// Reads until told to stop; the subscription must stay open all along (through every
/// outage: a hub that lost Redis keeps its clients).
async fn read(
    mut ws: Ws,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(100), ws.stream.next()).await {
            Err(_) => continue,
            Ok(None) => return Err("the hub ended the subscription".into()),
            Ok(Some(Err(e))) => return Err(format!("read error: {e}")),
            Ok(Some(Ok(Message::Text(text)))) => {
                let message: Value =
                    serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
                seen.lock().unwrap().push(message);
            }
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("closed: {frame:?}")),
            Ok(Some(Ok(_))) => continue,
        }
    }
    Ok(())
}

/// Topic → rev → the tag of the write that made it.
type Truth = HashMap<String, BTreeMap<u64, String>>;

/// Checks each subscriber's messages and returns what they agree on. Per topic, revs rise
/// strictly; a patch is always the next rev; a subscriber that is not `may_resync` sees
/// every rev from 1 (a snapshot first, the topic's creation, then one patch per rev), and
/// one that is (its hub was cut off long enough for the log to be trimmed past it) may
/// jump ahead with a snapshot. Every subscriber has the same tag at the same rev, and
/// every subscriber that is not `may_resync` has exactly the same sequence.
fn check_sequences(seen: &[(usize, bool, Vec<Value>)]) -> Truth {
    let mut truth: Truth = HashMap::new();
    let mut full: Option<(usize, Truth)> = None;
    for (hub, may_resync, messages) in seen {
        let mut mine: Truth = HashMap::new();
        for m in messages {
            let (Some(topic), Some(rev)) = (m["topic"].as_str(), m["rev"].as_u64()) else {
                panic!("hub {hub}: a message without topic and rev: {m}");
            };
            let (kind, tag) = match m["type"].as_str() {
                Some("patch") => ("patch", m["patch"]["last"].as_str()),
                Some("snapshot") => ("snapshot", m["state"]["last"].as_str()),
                _ => panic!("hub {hub}: unexpected message {m}"),
            };
            let tag = tag.unwrap_or_else(|| panic!("hub {hub}: a change without a tag: {m}"));
            let revs = mine.entry(topic.to_string()).or_default();
            let previous = revs.keys().next_back().copied().unwrap_or(0);
            assert!(
                rev > previous,
                "hub {hub}: {topic} went from rev {previous} to {rev}: {m}"
            );
            let next = rev == previous + 1;
            match (kind, may_resync) {
                ("patch", _) => assert!(
                    next,
                    "hub {hub}: a patch skipped revs ({previous} → {rev}): {m}"
                ),
                (_, false) => assert!(
                    next,
                    "hub {hub}: {topic} skipped from {previous} to {rev}: {m}"
                ),
                _ => {}
            }
            if previous == 0 && !may_resync {
                assert_eq!(
                    kind, "snapshot",
                    "hub {hub}: {topic} began with a patch: {m}"
                );
            }
            revs.insert(rev, tag.to_string());
            let agreed = truth.entry(topic.to_string()).or_default();
            match agreed.get(&rev) {
                Some(other) => {
                    assert_eq!(other, tag, "hubs disagree on what made {topic} rev {rev}")
                }
                None => {
                    agreed.insert(rev, tag.to_string());
                }
            }
        }
        if !may_resync {
            match &full {
                Some((first, theirs)) => assert!(
                    *theirs == mine,
                    "hubs {first} and {hub} saw different sequences"
                ),
                None => full = Some((*hub, mine)),
            }
        }
    }
    truth
}

/// What the writes came to, for the figures.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: usize,
    pub refused: usize,
    /// Refused writes that Redis had stored all the same (the connection broke between the
    /// append and its answer; see docs/cluster.md): they are in the log, once.
    pub stored_though_refused: usize,
}

/// Every acknowledged write is in `truth` at its rev; every rev in `truth` was made by a
/// write that was sent, and by one only (no write applied twice).
fn check_writes(sent: &[Sent], truth: &Truth) -> Outcome {
    let by_tag: HashMap<&str, &Sent> = sent.iter().map(|s| (s.tag.as_str(), s)).collect();
    let mut outcome = Outcome::default();
    for s in sent {
        match s.answer {
            Answer::Acked(rev) => {
                outcome.acked += 1;
                let at = truth.get(&s.topic).and_then(|revs| revs.get(&rev));
                assert_eq!(
                    at.map(String::as_str),
                    Some(s.tag.as_str()),
                    "acknowledged write {s:?} is not at its rev"
                );
            }
            Answer::Refused => outcome.refused += 1,
            Answer::Failed(_) => panic!("a write that failed: {s:?}"),
        }
    }
    let mut made: HashMap<&str, (String, u64)> = HashMap::new();
    for (topic, revs) in truth {
        for (rev, tag) in revs {
            if let Some(earlier) = made.insert(tag, (topic.clone(), *rev)) {
                panic!("write {tag} was applied twice: {earlier:?} and ({topic}, {rev})");
            }
            let s = by_tag
                .get(tag.as_str())
                .unwrap_or_else(|| panic!("{topic} rev {rev} carries {tag}, which no writer sent"));
            assert_eq!(&s.topic, topic, "{tag} was written to {}", s.topic);
            if s.answer == Answer::Refused {
                outcome.stored_though_refused += 1;
            }
        }
    }
    outcome
}

/// The end of every chaos test: waits until each watcher (with whether its hub may have
/// resynced) has seen `want`, the log's final revs, then runs every check on what they saw,
/// the writes `sent`, and the final state of the `hubs`.
pub async fn check_all(
    watchers: Vec<(Watcher, bool)>,
    sent: &[Sent],
    want: &HashMap<String, u64>,
    hubs: &[&Server],
) -> Outcome {
    let mut seen = Vec::new();
    for (watcher, may_resync) in watchers {
        let hub = watcher.hub;
        let messages = watcher.finish(want, Duration::from_secs(15)).await;
        seen.push((hub, may_resync, messages));
    }
    let truth = check_sequences(&seen);
    let outcome = check_writes(sent, &truth);
    check_final_states(hubs, want, &truth).await;
    outcome
}

/// Every hub's answer for each topic is the log's final rev and the tag of that rev.
async fn check_final_states(hubs: &[&Server], final_revs: &HashMap<String, u64>, truth: &Truth) {
    for (i, hub) in hubs.iter().enumerate() {
        for (topic, rev) in final_revs {
            let got = hub.get(&format!("/api/state/{topic}")).await;
            assert_eq!(got.status, 200, "hub {i} {topic}: {}", got.text);
            let body = got.json();
            assert_eq!(body["rev"], *rev, "hub {i} {topic}: {body}");
            let tag = &truth[topic][rev];
            assert_eq!(body["state"], json!({"last": tag}), "hub {i} {topic}");
        }
    }
}
