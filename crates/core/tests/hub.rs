//! Integration tests of the hub against the wire contract (/work/shared/PROTOCOL.md,
//! "Model" and "Delivery rules"): revs, patches, subscriptions, resume, conflation, store
//! failures and hubs sharing a log, observed the way a transport sees them: through
//! `Client::drain`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use statecast_core::engine::{
    Append, Appended, EngineError, Entry, EntryKind, Followed, Loaded, Record, SharedLog,
};
use statecast_core::{
    Client, Engine, ErrorCode, Hub, HubConfig, HubError, MemoryEngine, Mode, OutboxLimits, Outcome,
    Pattern, Since, Topic, Write, merge,
};
use statecast_testkit::{merge_apply, merge_patch};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

fn pat(text: &str) -> Pattern {
    Pattern::new(text).unwrap()
}

fn pats(texts: &[&str]) -> Vec<Pattern> {
    texts.iter().map(|t| pat(t)).collect()
}

fn new_hub() -> Hub {
    Hub::open(MemoryEngine, HubConfig::default()).unwrap()
}

fn hub_with(configure: impl FnOnce(&mut HubConfig)) -> Hub {
    let mut config = HubConfig::default();
    configure(&mut config);
    Hub::open(MemoryEngine, config).unwrap()
}

fn changed(rev: u64) -> Outcome {
    Outcome { rev, changed: true }
}

fn unchanged(rev: u64) -> Outcome {
    Outcome {
        rev,
        changed: false,
    }
}

async fn run(hub: &Hub, write: Write) -> Result<Outcome, HubError> {
    hub.submit(write)?.wait().await
}

/// Everything queued for the client, parsed.
fn drain(client: &Client) -> Vec<Value> {
    let mut frames = Vec::new();
    client.drain(&mut frames, usize::MAX);
    frames
        .iter()
        .map(|f| serde_json::from_slice(&f.bytes).unwrap())
        .collect()
}

/// The published state and rev of a topic, parsed.
fn hub_state(hub: &Hub, name: &str) -> Option<(u64, Value)> {
    hub.get(name)
        .map(|t| (t.rev, serde_json::from_slice(&t.state).unwrap()))
}

fn snapshot(t: &str, rev: u64, state: Value) -> Value {
    json!({"type": "snapshot", "topic": t, "rev": rev, "state": state})
}

fn patch(t: &str, rev: u64, patch: Value) -> Value {
    json!({"type": "patch", "topic": t, "rev": rev, "patch": patch})
}

fn removed(t: &str, rev: u64) -> Value {
    json!({"type": "removed", "topic": t, "rev": rev})
}

fn event(t: &str, data: Value) -> Value {
    json!({"type": "event", "topic": t, "data": data})
}

/// Sorts messages by topic (stable), for checks where only per-topic order is promised.
fn by_topic(mut messages: Vec<Value>) -> Vec<Value> {
    messages.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    messages
}

/// A client-side replica: applies what a client receives, checking the delivery rules.
#[derive(Debug, Default)]
struct Mirror {
    /// topic → (rev, state or `None` once removed).
    topics: BTreeMap<String, (u64, Option<Value>)>,
    events: Vec<Value>,
    lagged: Vec<u64>,
    /// Require every state message after a topic's first to have rev = previous + 1 (a
    /// client that was never conflated); otherwise snapshots and removals may skip revs.
    strict: bool,
    messages: usize,
}

impl Mirror {
    fn strict() -> Mirror {
        Mirror {
            strict: true,
            ..Mirror::default()
        }
    }

    fn lax() -> Mirror {
        Mirror::default()
    }

    fn apply_all(&mut self, messages: &[Value]) {
        for m in messages {
            self.apply(m);
        }
    }

    fn apply(&mut self, m: &Value) {
        self.messages += 1;
        let kind = m["type"].as_str().expect("a message has a type");
        if kind == "event" {
            self.events.push(m.clone());
            return;
        }
        if kind == "lagged" {
            self.lagged
                .push(m["dropped_events"].as_u64().expect("dropped_events"));
            return;
        }
        let t = m["topic"]
            .as_str()
            .expect("a state message has a topic")
            .to_owned();
        let rev = m["rev"].as_u64().expect("a state message has a rev");
        let prev = self.topics.get(&t).map(|(r, _)| *r);
        match kind {
            "snapshot" | "removed" => {
                if let Some(prev) = prev {
                    if self.strict {
                        assert_eq!(rev, prev + 1, "{kind} of {t} after rev {prev}: {m}");
                    } else {
                        assert!(rev > prev, "{kind} of {t} went back from rev {prev}: {m}");
                    }
                }
                let state = (kind == "snapshot").then(|| m["state"].clone());
                if let Some(s) = &state {
                    assert!(!s.is_null(), "a snapshot never holds null: {m}");
                }
                self.topics.insert(t, (rev, state));
            }
            "patch" => {
                let (held, state) = self
                    .topics
                    .get_mut(&t)
                    .unwrap_or_else(|| panic!("patch of {t} without a base: {m}"));
                assert_eq!(rev, *held + 1, "patch of {t} after rev {held}: {m}");
                let state = state
                    .as_mut()
                    .unwrap_or_else(|| panic!("patch of removed topic {t}: {m}"));
                // A patch holds only what changed.
                assert_minimal_patch(state, &m["patch"], m);
                merge_apply(state, &m["patch"]);
                *held = rev;
            }
            other => panic!("unexpected message type {other}: {m}"),
        }
    }

    /// The replica's view of a topic in the form of [`hub_state`]: `None` when removed or
    /// never seen.
    fn state(&self, t: &str) -> Option<(u64, Value)> {
        match self.topics.get(t) {
            Some((rev, Some(state))) => Some((*rev, state.clone())),
            _ => None,
        }
    }

    fn rev(&self, t: &str) -> Option<u64> {
        self.topics.get(t).map(|(r, _)| *r)
    }
}

/// Checks that a merge patch for `old` holds only what changed: every `null` removes a
/// member that exists, every other member differs from the old one.
fn assert_minimal_patch(old: &Value, patch: &Value, message: &Value) {
    let (Value::Object(old), Value::Object(patch)) = (old, patch) else {
        assert_ne!(old, patch, "patch replaces a state by itself: {message}");
        return;
    };
    assert!(!patch.is_empty(), "empty (nested) patch: {message}");
    for (k, v) in patch {
        match (old.get(k), v) {
            (None, Value::Null) => panic!("patch removes missing member {k}: {message}"),
            (Some(_), Value::Null) => {}
            (Some(old_child @ Value::Object(_)), Value::Object(_)) => {
                assert_minimal_patch(old_child, v, message)
            }
            (old_child, _) => assert_ne!(
                old_child,
                Some(v),
                "patch holds unchanged member {k}: {message}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Revs and refused writes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn revs_start_at_one_and_grow_by_one_per_change() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("railhub/esp32-01");

    assert_eq!(hub.set(&t, json!({"uptime": 1})).await.unwrap(), changed(1));
    assert_eq!(
        hub.patch(&t, json!({"uptime": 2})).await.unwrap(),
        changed(2)
    );
    assert_eq!(
        hub.set(&t, json!({"uptime": 3, "x": true})).await.unwrap(),
        changed(3)
    );
    assert_eq!(hub.patch(&t, json!({"x": null})).await.unwrap(), changed(4));
    assert_eq!(hub_state(&hub, &t), Some((4, json!({"uptime": 3}))));

    let revs: Vec<u64> = drain(&client)
        .iter()
        .map(|m| m["rev"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [1, 2, 3, 4]);

    // Revs are per topic.
    let other = topic("railhub/esp32-02");
    assert_eq!(
        hub.set(&other, json!({"uptime": 9})).await.unwrap(),
        changed(1)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_write_that_changes_nothing_is_not_a_change() {
    let hub = new_hub();
    let t = topic("micboard/SHURE001");
    hub.set(
        &t,
        json!({"battery": 80, "rf": {"a": -60, "b": -61}, "name": "Lead"}),
    )
    .await
    .unwrap();
    hub.patch(&t, json!({"battery": 79})).await.unwrap();
    let client = hub.connect();
    client.subscribe(&pats(&["micboard/#"]), &Since::Now, None);
    drain(&client);

    let same = json!({"battery": 79, "rf": {"a": -60, "b": -61}, "name": "Lead"});
    assert_eq!(hub.set(&t, same.clone()).await.unwrap(), unchanged(2));
    assert_eq!(
        hub.patch(&t, json!({"battery": 79})).await.unwrap(),
        unchanged(2)
    );
    assert_eq!(hub.patch(&t, json!({})).await.unwrap(), unchanged(2));
    assert_eq!(
        hub.patch(&t, json!({"missing": null})).await.unwrap(),
        unchanged(2)
    );
    assert_eq!(
        hub.patch(&t, json!({"rf": {"a": -60}, "name": "Lead"}))
            .await
            .unwrap(),
        unchanged(2)
    );
    // Member order does not make a state different.
    let reordered: Value =
        serde_json::from_str(r#"{"name":"Lead","rf":{"b":-61,"a":-60},"battery":79}"#).unwrap();
    assert_eq!(hub.set(&t, reordered).await.unwrap(), unchanged(2));
    let conditional = Write::Set {
        topic: t.clone(),
        state: same.clone(),
        if_rev: Some(2),
    };
    assert_eq!(run(&hub, conditional).await.unwrap(), unchanged(2));

    assert_eq!(hub_state(&hub, &t), Some((2, same)));
    assert!(drain(&client).is_empty(), "a no-op write delivers nothing");

    // The next real change takes the next rev.
    assert_eq!(
        hub.patch(&t, json!({"battery": 78})).await.unwrap(),
        changed(3)
    );
    assert_eq!(drain(&client), [patch(&t, 3, json!({"battery": 78}))]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_no_op_write_right_after_a_pending_change_is_not_a_change() {
    // The second write equals the first, which is not yet durable when it is submitted.
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("a/b");
    let first = hub
        .submit(Write::Set {
            topic: t.clone(),
            state: json!({"x": 1}),
            if_rev: None,
        })
        .unwrap();
    let second = hub
        .submit(Write::Set {
            topic: t.clone(),
            state: json!({"x": 1}),
            if_rev: None,
        })
        .unwrap();
    assert_eq!(first.wait().await.unwrap(), changed(1));
    assert_eq!(second.wait().await.unwrap(), unchanged(1));
    assert_eq!(drain(&client), [snapshot(&t, 1, json!({"x": 1}))]);
}

#[tokio::test(flavor = "current_thread")]
async fn delete_keeps_the_rev_and_re_creation_continues_it() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["retroboard/#"]), &Since::Now, None);
    let t = topic("retroboard/current_app");

    assert_eq!(
        hub.set(&t, json!({"app": "clock"})).await.unwrap(),
        changed(1)
    );
    assert_eq!(
        hub.patch(&t, json!({"app": "tetris"})).await.unwrap(),
        changed(2)
    );
    assert_eq!(hub.topic_count(), 1);
    assert_eq!(hub.delete(&t).await.unwrap(), changed(3));
    assert!(hub.get(&t).is_none());
    assert_eq!(hub.topic_count(), 0);
    // Re-creation by set continues the revs.
    assert_eq!(
        hub.set(&t, json!({"app": "snake"})).await.unwrap(),
        changed(4)
    );
    assert_eq!(hub.delete(&t).await.unwrap(), changed(5));
    // Re-creation by patch (applied to `{}`) too.
    assert_eq!(
        hub.patch(&t, json!({"app": "pong", "gone": null}))
            .await
            .unwrap(),
        changed(6)
    );
    assert_eq!(hub_state(&hub, &t), Some((6, json!({"app": "pong"}))));

    assert_eq!(
        drain(&client),
        [
            snapshot(&t, 1, json!({"app": "clock"})),
            patch(&t, 2, json!({"app": "tetris"})),
            removed(&t, 3),
            snapshot(&t, 4, json!({"app": "snake"})),
            removed(&t, 5),
            snapshot(&t, 6, json!({"app": "pong"})),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn deleting_a_missing_topic_is_not_found() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let never = topic("never/held");
    assert_eq!(
        hub.delete(&never).await.unwrap_err().code,
        ErrorCode::NotFound
    );

    let t = topic("gone/soon");
    hub.set(&t, json!({"a": 1})).await.unwrap();
    hub.delete(&t).await.unwrap();
    let err = run(
        &hub,
        Write::Delete {
            topic: t.clone(),
            if_rev: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(
        drain(&client),
        [snapshot(&t, 1, json!({"a": 1})), removed(&t, 2)]
    );

    // The refused delete did not take a rev.
    assert_eq!(hub.set(&t, json!({"a": 2})).await.unwrap(), changed(3));
    assert!(hub.get(&never).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_null_state_is_refused_and_changes_nothing() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("a/b");
    hub.set(&t, json!({"x": 1})).await.unwrap();
    drain(&client);

    assert_eq!(
        hub.set(&t, Value::Null).await.unwrap_err().code,
        ErrorCode::BadRequest
    );
    // A merge patch that is `null` as a whole would make the state null.
    assert_eq!(
        hub.patch(&t, Value::Null).await.unwrap_err().code,
        ErrorCode::BadRequest
    );
    let conditional = Write::Set {
        topic: t.clone(),
        state: Value::Null,
        if_rev: Some(1),
    };
    assert_eq!(
        run(&hub, conditional).await.unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(hub_state(&hub, &t), Some((1, json!({"x": 1}))));

    // Nor does it create a missing topic.
    let missing = topic("a/missing");
    assert_eq!(
        hub.set(&missing, Value::Null).await.unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        hub.patch(&missing, Value::Null).await.unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert!(hub.get(&missing).is_none());
    assert!(drain(&client).is_empty());

    assert_eq!(hub.patch(&t, json!({"x": 2})).await.unwrap(), changed(2));
    assert_eq!(
        hub.patch(&missing, json!({"y": 1})).await.unwrap(),
        changed(1)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_oversized_state_is_refused_and_changes_nothing() {
    let hub = hub_with(|c| c.max_state_bytes = 64);
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("a/b");
    let small = json!({"x": "0123456789"});
    hub.set(&t, small.clone()).await.unwrap();
    drain(&client);

    let big = json!({"x": "x".repeat(100)});
    assert_eq!(
        hub.set(&t, big.clone()).await.unwrap_err().code,
        ErrorCode::TooLarge
    );
    // A patch is judged by the state it makes.
    assert_eq!(
        hub.patch(&t, json!({"y": "y".repeat(50)}))
            .await
            .unwrap_err()
            .code,
        ErrorCode::TooLarge
    );
    assert_eq!(hub_state(&hub, &t), Some((1, small)));

    let missing = topic("a/missing");
    assert_eq!(
        hub.set(&missing, big.clone()).await.unwrap_err().code,
        ErrorCode::TooLarge
    );
    assert_eq!(
        hub.patch(&missing, big.clone()).await.unwrap_err().code,
        ErrorCode::TooLarge
    );
    assert!(hub.get(&missing).is_none());
    assert_eq!(
        hub.event(&t, big).await.unwrap_err().code,
        ErrorCode::TooLarge
    );
    assert!(drain(&client).is_empty());

    // Exactly at the limit is fine: {"x":"…"} is 8 bytes plus the string.
    let at_limit = json!({"x": "z".repeat(56)});
    assert_eq!(serde_json::to_vec(&at_limit).unwrap().len(), 64);
    assert_eq!(hub.set(&t, at_limit).await.unwrap(), changed(2));
}

#[tokio::test(flavor = "current_thread")]
async fn a_conditional_write_at_the_wrong_rev_is_a_conflict() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("a/b");
    hub.set(&t, json!({"x": 1})).await.unwrap();
    hub.patch(&t, json!({"x": 2})).await.unwrap();
    drain(&client);

    for stale in [0, 1, 3] {
        let write = Write::Set {
            topic: t.clone(),
            state: json!({"x": 100}),
            if_rev: Some(stale),
        };
        assert_eq!(
            run(&hub, write).await.unwrap_err().code,
            ErrorCode::Conflict,
            "if_rev {stale}"
        );
    }
    let write = Write::Patch {
        topic: t.clone(),
        patch: json!({"x": 100}),
        if_rev: Some(1),
    };
    assert_eq!(
        run(&hub, write).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    let write = Write::Delete {
        topic: t.clone(),
        if_rev: Some(1),
    };
    assert_eq!(
        run(&hub, write).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    assert_eq!(hub_state(&hub, &t), Some((2, json!({"x": 2}))));
    assert!(drain(&client).is_empty());

    // A missing topic has no rev to match.
    let missing = Write::Set {
        topic: topic("a/missing"),
        state: json!({"x": 1}),
        if_rev: Some(1),
    };
    assert_eq!(
        run(&hub, missing).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    assert!(hub.get("a/missing").is_none());

    // The right rev goes through.
    let write = Write::Set {
        topic: t.clone(),
        state: json!({"x": 3}),
        if_rev: Some(2),
    };
    assert_eq!(run(&hub, write).await.unwrap(), changed(3));
    assert_eq!(drain(&client), [patch(&t, 3, json!({"x": 3}))]);
}

// ---------------------------------------------------------------------------------------
// What a change looks like on the wire
// ---------------------------------------------------------------------------------------

fn device_state() -> Value {
    json!({
        "uptime": 100,
        "name": "esp32-01",
        "fw": {"version": "1.2.3", "build": 42},
        "outputs": [{"id": 0, "on": false}, {"id": 1, "on": true}],
        "mic": {"battery": 80, "rf": -60},
    })
}

#[tokio::test(flavor = "current_thread")]
async fn a_set_arrives_as_a_patch_holding_only_what_changed() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("railhub/esp32-01");

    hub.set(&t, device_state()).await.unwrap();
    // A full set that changes one nested member, replaces an array and drops a member.
    let mut next = device_state();
    next["uptime"] = json!(101);
    next["mic"]["battery"] = json!(79);
    next["outputs"][0]["on"] = json!(true);
    next.as_object_mut().unwrap().remove("name");
    hub.set(&t, next.clone()).await.unwrap();
    // A patch repeating unchanged members.
    hub.patch(
        &t,
        json!({"uptime": 102, "fw": {"version": "1.2.3", "build": 42}, "mic": {"rf": -60}}),
    )
    .await
    .unwrap();
    // A new nested member.
    hub.patch(&t, json!({"mic": {"mute": true}})).await.unwrap();

    assert_eq!(
        drain(&client),
        [
            snapshot(&t, 1, device_state()),
            patch(
                &t,
                2,
                json!({
                    "uptime": 101,
                    "name": null,
                    "mic": {"battery": 79},
                    "outputs": [{"id": 0, "on": true}, {"id": 1, "on": true}],
                })
            ),
            patch(&t, 3, json!({"uptime": 102})),
            patch(&t, 4, json!({"mic": {"mute": true}})),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_member_set_to_null_arrives_as_a_snapshot() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("micboard/SHURE001");

    hub.set(&t, json!({"battery": 80, "rf": -60}))
        .await
        .unwrap();
    hub.set(&t, json!({"battery": null, "rf": -60}))
        .await
        .unwrap();
    // Unchanged nulls do not force a snapshot.
    hub.set(&t, json!({"battery": null, "rf": -61}))
        .await
        .unwrap();
    // A null nested in a changed member does.
    hub.set(
        &t,
        json!({"battery": null, "rf": -61, "tx": {"name": null}}),
    )
    .await
    .unwrap();
    assert_eq!(
        drain(&client),
        [
            snapshot(&t, 1, json!({"battery": 80, "rf": -60})),
            snapshot(&t, 2, json!({"battery": null, "rf": -60})),
            patch(&t, 3, json!({"rf": -61})),
            snapshot(
                &t,
                4,
                json!({"battery": null, "rf": -61, "tx": {"name": null}})
            ),
        ]
    );
    assert_eq!(
        hub_state(&hub, &t),
        Some((4, json!({"battery": null, "rf": -61, "tx": {"name": null}})))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn creation_arrives_as_a_snapshot_and_removal_as_removed() {
    let hub = new_hub();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let a = topic("x/a");
    let b = topic("x/b");
    hub.set(&a, json!({"v": 1})).await.unwrap();
    hub.patch(&b, json!({"v": 2, "w": null})).await.unwrap();
    hub.delete(&a).await.unwrap();
    // Non-object states are states too.
    hub.set(&a, json!([1, 2])).await.unwrap();
    hub.set(&a, json!("text")).await.unwrap();
    assert_eq!(
        drain(&client),
        [
            snapshot(&a, 1, json!({"v": 1})),
            snapshot(&b, 1, json!({"v": 2})),
            removed(&a, 2),
            snapshot(&a, 3, json!([1, 2])),
            patch(&a, 4, json!("text")),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn full_mode_delivers_every_change_as_a_snapshot() {
    let hub = new_hub();
    let full = hub.connect();
    full.subscribe(&pats(&["#"]), &Since::Now, Some(Mode::Full));
    let t = topic("a/b");
    hub.set(&t, json!({"x": 1, "y": 1})).await.unwrap();
    hub.patch(&t, json!({"x": 2})).await.unwrap();
    hub.delete(&t).await.unwrap();
    assert_eq!(
        drain(&full),
        [
            snapshot(&t, 1, json!({"x": 1, "y": 1})),
            snapshot(&t, 2, json!({"x": 2, "y": 1})),
            removed(&t, 3)
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------

async fn micboard_hub() -> Hub {
    let hub = new_hub();
    hub.set(&topic("micboard/A/battery"), json!({"level": 80}))
        .await
        .unwrap();
    hub.set(&topic("micboard/B/battery"), json!({"level": 60}))
        .await
        .unwrap();
    hub.set(&topic("micboard/A"), json!({"name": "Lead"}))
        .await
        .unwrap();
    hub.set(&topic("micboard/C/battery"), json!({"level": 10}))
        .await
        .unwrap();
    hub.delete(&topic("micboard/C/battery")).await.unwrap();
    hub.set(&topic("railhub/esp32-01"), json!({"uptime": 5}))
        .await
        .unwrap();
    hub
}

#[tokio::test(flavor = "current_thread")]
async fn subscribe_sends_a_snapshot_per_matching_live_topic() {
    let hub = micboard_hub().await;
    let client = hub.connect();
    assert_eq!(
        client.subscribe(&pats(&["micboard/+/battery"]), &Since::Now, None),
        2
    );
    assert_eq!(
        by_topic(drain(&client)),
        [
            snapshot("micboard/A/battery", 1, json!({"level": 80})),
            snapshot("micboard/B/battery", 1, json!({"level": 60})),
        ]
    );

    let all = hub.connect();
    assert_eq!(all.subscribe(&pats(&["#"]), &Since::Now, None), 4);
    assert_eq!(
        by_topic(drain(&all)),
        [
            snapshot("micboard/A", 1, json!({"name": "Lead"})),
            snapshot("micboard/A/battery", 1, json!({"level": 80})),
            snapshot("micboard/B/battery", 1, json!({"level": 60})),
            snapshot("railhub/esp32-01", 1, json!({"uptime": 5})),
        ]
    );

    let none = hub.connect();
    assert_eq!(
        none.subscribe(&pats(&["nothing/#", "micboard/C/+"]), &Since::Now, None),
        0
    );
    assert!(drain(&none).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_topic_matching_two_patterns_is_delivered_once_per_change() {
    let hub = micboard_hub().await;
    let client = hub.connect();
    let n = client.subscribe(
        &pats(&[
            "micboard/#",
            "micboard/+/battery",
            "#",
            "micboard/A/battery",
        ]),
        &Since::Now,
        None,
    );
    assert_eq!(n, 4);
    let first = drain(&client);
    assert_eq!(first.len(), 4, "{first:?}");
    // A later subscribe with yet another overlapping pattern adds nothing.
    assert_eq!(client.subscribe(&pats(&["+/A/+"]), &Since::Now, None), 0);
    assert!(drain(&client).is_empty());

    let t = topic("micboard/A/battery");
    hub.patch(&t, json!({"level": 79})).await.unwrap();
    hub.delete(&t).await.unwrap();
    hub.set(&t, json!({"level": 100})).await.unwrap();
    hub.event(&t, json!({"button": 1})).await.unwrap();
    assert_eq!(
        drain(&client),
        [
            patch(&t, 2, json!({"level": 79})),
            removed(&t, 3),
            snapshot(&t, 4, json!({"level": 100})),
            event(&t, json!({"button": 1})),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_pattern_sends_snapshots_only_for_topics_not_yet_covered() {
    let hub = micboard_hub().await;
    let client = hub.connect();
    assert_eq!(
        client.subscribe(&pats(&["micboard/A/#"]), &Since::Now, None),
        2
    );
    assert_eq!(
        by_topic(drain(&client)),
        [
            snapshot("micboard/A", 1, json!({"name": "Lead"})),
            snapshot("micboard/A/battery", 1, json!({"level": 80}))
        ]
    );
    hub.patch(&topic("micboard/A/battery"), json!({"level": 70}))
        .await
        .unwrap();
    drain(&client);

    assert_eq!(
        client.subscribe(&pats(&["micboard/+/battery"]), &Since::Now, None),
        1
    );
    assert_eq!(
        drain(&client),
        [snapshot("micboard/B/battery", 1, json!({"level": 60}))]
    );

    // The same pattern again is not new.
    assert_eq!(
        client.subscribe(&pats(&["micboard/A/#"]), &Since::Now, None),
        0
    );
    assert!(drain(&client).is_empty());

    // Also with `since`: only uncovered topics are considered.
    let since = Since::Revs(HashMap::from([
        ("micboard/A/battery".to_owned(), 1),
        ("railhub/esp32-01".to_owned(), 0),
    ]));
    assert_eq!(client.subscribe(&pats(&["#"]), &since, None), 1);
    assert_eq!(
        drain(&client),
        [snapshot("railhub/esp32-01", 1, json!({"uptime": 5}))]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn unsubscribe_stops_delivery() {
    let hub = micboard_hub().await;
    let client = hub.connect();
    client.subscribe(
        &pats(&["micboard/#", "micboard/+/battery"]),
        &Since::Now,
        None,
    );
    drain(&client);
    let a = topic("micboard/A/battery");

    // Still covered by the other pattern.
    assert_eq!(
        client.unsubscribe(&pats(&["micboard/+/battery", "not/held"])),
        1
    );
    hub.patch(&a, json!({"level": 1})).await.unwrap();
    assert_eq!(drain(&client), [patch(&a, 2, json!({"level": 1}))]);

    assert_eq!(client.unsubscribe(&pats(&["micboard/#"])), 1);
    hub.patch(&a, json!({"level": 2})).await.unwrap();
    hub.delete(&a).await.unwrap();
    hub.set(&topic("micboard/new"), json!({})).await.unwrap();
    hub.event(&a, json!("ping")).await.unwrap();
    assert!(drain(&client).is_empty());
    assert_eq!(client.unsubscribe(&pats(&["micboard/#"])), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn events_reach_only_matching_subscribers() {
    let hub = new_hub();
    let mics = hub.connect();
    mics.subscribe(&pats(&["micboard/#"]), &Since::Now, None);
    let rail = hub.connect();
    rail.subscribe(&pats(&["railhub/#"]), &Since::Now, None);
    let idle = hub.connect();
    let both = hub.connect();
    both.subscribe(&pats(&["micboard/+", "#"]), &Since::Now, None);

    let t = topic("micboard/SHURE001");
    hub.event(&t, json!({"event": "mute"})).await.unwrap();
    hub.event(
        &topic("mopidy/player1"),
        json!({"event": "track_playback_started"}),
    )
    .await
    .unwrap();

    assert_eq!(drain(&mics), [event(&t, json!({"event": "mute"}))]);
    assert!(drain(&rail).is_empty());
    assert!(drain(&idle).is_empty());
    assert_eq!(
        drain(&both),
        [
            event(&t, json!({"event": "mute"})),
            event("mopidy/player1", json!({"event": "track_playback_started"})),
        ]
    );

    // Events are not stored: they neither create topics nor reach later subscribers.
    assert!(hub.get(&t).is_none());
    let late = hub.connect();
    late.subscribe(&pats(&["#"]), &Since::Now, None);
    assert!(drain(&late).is_empty());
}

// ---------------------------------------------------------------------------------------
// Resuming with `since`
// ---------------------------------------------------------------------------------------

fn since(entries: &[(&str, u64)]) -> Since {
    Since::Revs(entries.iter().map(|(t, r)| ((*t).to_owned(), *r)).collect())
}

#[tokio::test(flavor = "current_thread")]
async fn resume_at_the_current_rev_sends_nothing() {
    let hub = new_hub();
    let t = topic("a/b");
    hub.set(&t, json!({"x": 1})).await.unwrap();
    hub.patch(&t, json!({"x": 2})).await.unwrap();
    let gone = topic("a/gone");
    hub.set(&gone, json!({})).await.unwrap();
    hub.delete(&gone).await.unwrap();

    let client = hub.connect();
    assert_eq!(
        client.subscribe(&pats(&["a/#"]), &since(&[("a/b", 2), ("a/gone", 2)]), None),
        0
    );
    assert!(drain(&client).is_empty());
    // And it is subscribed.
    hub.patch(&t, json!({"x": 3})).await.unwrap();
    assert_eq!(drain(&client), [patch(&t, 3, json!({"x": 3}))]);
}

#[tokio::test(flavor = "current_thread")]
async fn resume_within_history_replays_exactly_the_missing_changes_in_order() {
    let hub = new_hub();
    let t = topic("railhub/esp32-01");
    let other = topic("railhub/esp32-02");
    let mut states = vec![Value::Null]; // states[rev]
    hub.set(&t, json!({"uptime": 0, "outputs": [0, 0]}))
        .await
        .unwrap();
    states.push(json!({"uptime": 0, "outputs": [0, 0]}));
    hub.set(&other, json!({"uptime": 0})).await.unwrap();
    for i in 1..=5 {
        hub.patch(&t, json!({"uptime": i})).await.unwrap();
        let mut s = states.last().unwrap().clone();
        s["uptime"] = json!(i);
        states.push(s);
    }
    assert_eq!(hub_state(&hub, &t), Some((6, states[6].clone())));

    for held in 1..6u64 {
        let client = hub.connect();
        let n = client.subscribe(
            &pats(&["railhub/#"]),
            &since(&[(&t, held), (&other, 1)]),
            None,
        );
        assert_eq!(n, 1);
        let got = drain(&client);
        let revs: Vec<u64> = got.iter().map(|m| m["rev"].as_u64().unwrap()).collect();
        assert_eq!(revs, ((held + 1)..=6).collect::<Vec<_>>(), "since {held}");
        let mut mirror = Mirror::strict();
        mirror.apply(&snapshot(&t, held, states[held as usize].clone()));
        for m in &got {
            assert_eq!(m["type"], "patch", "{m}");
        }
        mirror.apply_all(&got);
        assert_eq!(mirror.state(&t), hub_state(&hub, &t), "since {held}");
    }

    // Removal and re-creation are replayed as they happened.
    hub.delete(&t).await.unwrap(); // 7
    hub.set(&t, json!({"uptime": 0})).await.unwrap(); // 8
    hub.patch(&t, json!({"uptime": 1})).await.unwrap(); // 9
    let client = hub.connect();
    client.subscribe(&pats(&["railhub/esp32-01"]), &since(&[(&t, 5)]), None);
    assert_eq!(
        drain(&client),
        [
            patch(&t, 6, json!({"uptime": 5})),
            removed(&t, 7),
            snapshot(&t, 8, json!({"uptime": 0})),
            patch(&t, 9, json!({"uptime": 1})),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn resume_beyond_history_gets_a_snapshot() {
    let hub = hub_with(|c| c.resume_len = 4);
    let t = topic("a/b");
    hub.set(&t, json!({"n": 1})).await.unwrap();
    for n in 2..=10 {
        hub.patch(&t, json!({"n": n})).await.unwrap();
    }
    // History holds revs 7..=10: from 6 it can replay, from 5 it cannot.
    let client = hub.connect();
    client.subscribe(&pats(&["a/#"]), &since(&[("a/b", 6)]), None);
    let revs: Vec<(String, u64)> = drain(&client)
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_owned(),
                m["rev"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revs,
        [
            ("patch".into(), 7),
            ("patch".into(), 8),
            ("patch".into(), 9),
            ("patch".into(), 10)
        ]
    );

    for held in [1, 2, 5] {
        let client = hub.connect();
        client.subscribe(&pats(&["a/#"]), &since(&[("a/b", held)]), None);
        assert_eq!(
            drain(&client),
            [snapshot(&t, 10, json!({"n": 10}))],
            "since {held}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn resume_from_a_rev_newer_than_the_servers_gets_a_snapshot() {
    let hub = new_hub();
    let t = topic("a/b");
    hub.set(&t, json!({"n": 1})).await.unwrap();
    hub.patch(&t, json!({"n": 2})).await.unwrap();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &since(&[("a/b", 99)]), None);
    assert_eq!(drain(&client), [snapshot(&t, 2, json!({"n": 2}))]);

    // Same for a removed topic: the client learns it is removed.
    hub.delete(&t).await.unwrap();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &since(&[("a/b", 99)]), None);
    assert_eq!(drain(&client), [removed(&t, 3)]);
}

#[tokio::test(flavor = "current_thread")]
async fn resume_of_a_topic_removed_meanwhile_gets_removed() {
    let hub = hub_with(|c| c.resume_len = 4);
    let t = topic("a/b");
    hub.set(&t, json!({"n": 1})).await.unwrap();
    for n in 2..=7 {
        hub.patch(&t, json!({"n": n})).await.unwrap();
    }
    hub.delete(&t).await.unwrap(); // rev 8; history holds 5..=8

    let client = hub.connect();
    client.subscribe(&pats(&["a/#"]), &since(&[("a/b", 2)]), None);
    assert_eq!(drain(&client), [removed(&t, 8)]);

    // Within history, the missing changes and the removal are replayed.
    let client = hub.connect();
    client.subscribe(&pats(&["a/#"]), &since(&[("a/b", 6)]), None);
    assert_eq!(
        drain(&client),
        [patch(&t, 7, json!({"n": 7})), removed(&t, 8)]
    );

    // Without `since` a removed topic sends nothing.
    let client = hub.connect();
    assert_eq!(client.subscribe(&pats(&["a/#"]), &Since::Now, None), 0);
    assert!(drain(&client).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn resume_naming_a_topic_never_held_gets_removed_with_rev_0() {
    let hub = new_hub();
    hub.set(&topic("micboard/real"), json!({"v": 1}))
        .await
        .unwrap();
    let client = hub.connect();
    let revs = since(&[
        ("micboard/ghost", 5),
        ("micboard/real", 1),
        ("railhub/ghost", 3),
        ("bad//topic", 1),
    ]);
    client.subscribe(&pats(&["micboard/#"]), &revs, None);
    assert_eq!(drain(&client), [removed("micboard/ghost", 0)]);

    // And it is then delivered normally if created.
    let ghost = topic("micboard/ghost");
    hub.set(&ghost, json!({"v": 2})).await.unwrap();
    assert_eq!(drain(&client), [snapshot(&ghost, 1, json!({"v": 2}))]);
}

#[tokio::test(flavor = "current_thread")]
async fn resume_in_full_mode_sends_snapshots_instead_of_patches() {
    let hub = new_hub();
    let t = topic("a/b");
    hub.set(&t, json!({"n": 1, "k": "v"})).await.unwrap();
    hub.patch(&t, json!({"n": 2})).await.unwrap();
    hub.patch(&t, json!({"n": 3})).await.unwrap();

    let client = hub.connect();
    client.subscribe(&pats(&["a/#"]), &since(&[("a/b", 1)]), Some(Mode::Full));
    assert_eq!(drain(&client), [snapshot(&t, 3, json!({"n": 3, "k": "v"}))]);
    client.subscribe(&pats(&["other/#"]), &Since::Now, None); // keeps the mode
    hub.patch(&t, json!({"n": 4})).await.unwrap();
    assert_eq!(drain(&client), [snapshot(&t, 4, json!({"n": 4, "k": "v"}))]);
    // Current rev: nothing, as in patch mode.
    let client = hub.connect();
    client.subscribe(&pats(&["a/#"]), &since(&[("a/b", 4)]), Some(Mode::Full));
    assert!(drain(&client).is_empty());
}

// ---------------------------------------------------------------------------------------
// Resuming from a stream cursor
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn resume_from_a_cursor_sends_only_the_missed_changes() {
    let hub = new_hub();
    let (a, b, c) = (topic("dev/a"), topic("dev/b"), topic("dev/c"));
    hub.set(&a, json!({"n": 1})).await.unwrap();
    hub.set(&b, json!({"n": 1})).await.unwrap();
    hub.set(&c, json!({"n": 1})).await.unwrap();
    hub.set(&topic("elsewhere/x"), json!({"n": 1}))
        .await
        .unwrap();

    let first = hub.connect();
    first.subscribe(&pats(&["dev/#"]), &Since::Now, None);
    let mut mirror = Mirror::strict();
    let mut frames = Vec::new();
    let drained = first.drain_resumable(&mut frames, usize::MAX);
    for f in &frames {
        mirror.apply(&serde_json::from_slice(&f.bytes).unwrap());
    }
    hub.patch(&a, json!({"n": 2})).await.unwrap();
    hub.patch(&c, json!({"n": 2})).await.unwrap();
    frames.clear();
    let drained_later = first.drain_resumable(&mut frames, usize::MAX);
    for f in &frames {
        mirror.apply(&serde_json::from_slice(&f.bytes).unwrap());
    }
    let cursor = drained_later
        .cursor
        .expect("an emptied queue gives a cursor");
    assert!(cursor >= drained.cursor.unwrap());
    drop(first);

    // Missed: two patches of a, the removal of b, the creation of d, an event.
    hub.patch(&a, json!({"n": 3})).await.unwrap();
    hub.patch(&a, json!({"m": true})).await.unwrap();
    hub.delete(&b).await.unwrap();
    let d = topic("dev/d");
    hub.set(&d, json!({"n": 1})).await.unwrap();
    hub.patch(&topic("elsewhere/x"), json!({"n": 2}))
        .await
        .unwrap();
    hub.event(&a, json!("not stored")).await.unwrap();

    let second = hub.connect();
    second.subscribe(&pats(&["dev/#"]), &Since::Cursor(cursor), None);
    let mut frames = Vec::new();
    let drained = second.drain_resumable(&mut frames, usize::MAX);
    let got: Vec<Value> = frames
        .iter()
        .map(|f| serde_json::from_slice(&f.bytes).unwrap())
        .collect();
    assert_eq!(
        by_topic(got.clone()),
        [
            patch(&a, 3, json!({"n": 3})),
            patch(&a, 4, json!({"m": true})),
            removed(&b, 2),
            snapshot(&d, 1, json!({"n": 1})),
        ]
    );
    mirror.apply_all(&got);
    for t in ["dev/a", "dev/b", "dev/c", "dev/d"] {
        assert_eq!(mirror.state(t), hub_state(&hub, t), "{t}");
    }

    // From the new cursor there is nothing left to send.
    let third = hub.connect();
    third.subscribe(
        &pats(&["dev/#"]),
        &Since::Cursor(drained.cursor.unwrap()),
        None,
    );
    assert!(drain(&third).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_cursor_beyond_history_gets_snapshots() {
    let hub = hub_with(|c| c.resume_len = 2);
    let a = topic("dev/a");
    hub.set(&a, json!({"n": 0})).await.unwrap();
    let client = hub.connect();
    client.subscribe(&pats(&["dev/#"]), &Since::Now, None);
    let mut frames = Vec::new();
    let cursor = client
        .drain_resumable(&mut frames, usize::MAX)
        .cursor
        .unwrap();
    drop(client);
    for n in 1..=5 {
        hub.patch(&a, json!({"n": n})).await.unwrap();
    }
    let client = hub.connect();
    client.subscribe(&pats(&["dev/#"]), &Since::Cursor(cursor), None);
    assert_eq!(drain(&client), [snapshot(&a, 6, json!({"n": 5}))]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_cursor_after_a_conflated_drain_does_not_replay_what_the_snapshots_held() {
    // A client that fell behind gets fresh snapshots; the cursor it then reaches must not
    // make a resume replay changes those snapshots already held (the SSE transport uses
    // `Drained::cursor` as the event id a reconnect resumes from with `Last-Event-ID`).
    let hub = hub_with(|c| {
        c.outbox = OutboxLimits {
            max_messages: 4,
            max_bytes: 1 << 20,
        }
    });
    let client = hub.connect();
    client.subscribe(&pats(&["dev/#"]), &Since::Now, None);
    let topics = [topic("dev/a"), topic("dev/b"), topic("dev/c")];
    // Creations (3 messages), one patch (full), then a patch that conflates, and one more.
    for (n, t) in topics.iter().enumerate() {
        hub.set(t, json!({"n": n})).await.unwrap();
    }
    hub.patch(&topics[0], json!({"n": 10})).await.unwrap();
    hub.patch(&topics[1], json!({"n": 11})).await.unwrap();
    hub.patch(&topics[2], json!({"n": 12})).await.unwrap();
    assert!(hub.stats().conflations.load(Ordering::Relaxed) > 0);

    let mut mirror = Mirror::lax();
    let mut frames = Vec::new();
    let drained = client.drain_resumable(&mut frames, usize::MAX);
    for f in &frames {
        mirror.apply(&serde_json::from_slice(&f.bytes).unwrap());
    }
    for t in &topics {
        assert_eq!(mirror.state(t), hub_state(&hub, t), "{t}");
    }
    let cursor = drained.cursor.expect("an emptied queue gives a cursor");
    drop(client);

    // Nothing changed since: a resume from the cursor must send nothing (and certainly no
    // patch the client already applied).
    let resumed = hub.connect();
    resumed.subscribe(&pats(&["dev/#"]), &Since::Cursor(cursor), None);
    let replayed = drain(&resumed);
    for m in &replayed {
        let t = m["topic"].as_str().unwrap();
        assert!(
            m["rev"].as_u64().unwrap() > mirror.rev(t).unwrap(),
            "resuming from cursor {cursor} replays rev {} of {t}, which the client already holds: {m}",
            m["rev"]
        );
    }
    assert!(
        replayed.is_empty(),
        "nothing changed since the cursor: {replayed:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Slow clients and conflation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn a_slow_client_is_conflated_while_a_fast_one_sees_every_rev() {
    const MAX_MESSAGES: usize = 8;
    const CHANGES: usize = 1000;
    let hub = hub_with(|c| {
        c.outbox = OutboxLimits {
            max_messages: MAX_MESSAGES,
            max_bytes: 1 << 20,
        }
    });
    let topics = [topic("dev/a"), topic("dev/b"), topic("dev/c")];
    let done = topic("ctl/done");

    let slow = hub.connect();
    slow.subscribe(&pats(&["dev/#"]), &Since::Now, None);
    let fast = hub.connect();
    fast.subscribe(&pats(&["dev/#", "ctl/#"]), &Since::Now, None);

    // The fast client drains on its own task as messages arrive and reports progress.
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0usize);
    let fast_task = tokio::spawn(async move {
        let mut mirror = Mirror::strict();
        let mut frames = Vec::new();
        loop {
            fast.ready().await;
            frames.clear();
            let drained = fast.drain(&mut frames, 64);
            let mut finished = false;
            for f in &frames {
                let m: Value = serde_json::from_slice(&f.bytes).unwrap();
                finished |= m["type"] == "event" && m["topic"] == "ctl/done";
                mirror.apply(&m);
            }
            let _ = progress_tx.send(mirror.messages);
            if finished || drained.closed {
                return mirror;
            }
        }
    });

    // Writes go in bursts small enough for the fast client's outbox; the writer waits for
    // the fast client between bursts, never for the slow one.
    let mut events_published = 0u64;
    let mut expected_fast_messages = 0usize;
    let mut live = [false; 3];
    let mut i = 0usize;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next_random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while i < CHANGES {
        let burst = 1 + (next_random() % 4) as usize;
        let mut pending = Vec::new();
        for _ in 0..burst.min(CHANGES - i) {
            let k = (next_random() % 3) as usize;
            let t = topics[k].clone();
            let write = if live[k] && i % 97 == 50 {
                live[k] = false;
                Write::Delete {
                    topic: t,
                    if_rev: None,
                }
            } else if i % 41 == 1 {
                // A member set to null: a snapshot.
                live[k] = true;
                Write::Set {
                    topic: t,
                    state: json!({"i": i, "cleared": null, "outputs": [i % 2, i % 3]}),
                    if_rev: None,
                }
            } else {
                live[k] = true;
                Write::Patch {
                    topic: t,
                    patch: json!({"i": i, format!("k{}", i % 7): i % 11, "cleared": 1}),
                    if_rev: None,
                }
            };
            pending.push(hub.submit(write).unwrap());
            expected_fast_messages += 1;
            i += 1;
        }
        if i % 10 < burst {
            let data = json!({"event": "press", "i": i});
            pending.push(
                hub.submit(Write::Event {
                    topic: topics[i % 3].clone(),
                    data,
                })
                .unwrap(),
            );
            events_published += 1;
            expected_fast_messages += 1;
        }
        for p in pending {
            let outcome = p.wait().await.unwrap();
            assert!(outcome.rev == 0 || outcome.changed);
        }
        progress_rx
            .wait_for(|&n| n >= expected_fast_messages)
            .await
            .unwrap();
    }
    hub.event(&done, json!("done")).await.unwrap();
    let fast_mirror = fast_task.await.unwrap();

    // The fast client saw every change, in order, and every event.
    assert!(
        fast_mirror.lagged.is_empty(),
        "the fast client lagged: {:?}",
        fast_mirror.lagged
    );
    assert_eq!(fast_mirror.events.len() as u64, events_published + 1);
    let event_is: Vec<u64> = fast_mirror
        .events
        .iter()
        .filter_map(|e| e["data"]["i"].as_u64())
        .collect();
    assert!(
        event_is.windows(2).all(|w| w[0] < w[1]),
        "events out of order"
    );
    let total_revs: u64 = topics.iter().map(|t| fast_mirror.rev(t).unwrap()).sum();
    assert_eq!(
        total_revs, CHANGES as u64,
        "every change is one rev of one topic"
    );
    for t in &topics {
        assert_eq!(fast_mirror.state(t), hub_state(&hub, t), "{t}");
    }

    // The slow client never drained: its queue stayed bounded.
    let mut frames = Vec::new();
    let drained = slow.drain_resumable(&mut frames, usize::MAX);
    assert!(
        frames.len() <= MAX_MESSAGES + topics.len() + 1,
        "the slow client's queue held {} messages",
        frames.len()
    );
    assert!(drained.cursor.is_some());
    let mut slow_mirror = Mirror::lax();
    for f in &frames {
        slow_mirror.apply(&serde_json::from_slice(&f.bytes).unwrap());
    }
    for t in &topics {
        let held = slow_mirror
            .topics
            .get(t.as_str())
            .map(|(rev, s)| (*rev, s.clone()));
        let expected = hub
            .get(t)
            .map(|s| serde_json::from_slice::<Value>(&s.state).unwrap());
        assert_eq!(held.as_ref().and_then(|h| h.1.clone()), expected, "{t}");
        if expected.is_some() {
            assert_eq!(slow_mirror.state(t), hub_state(&hub, t), "{t}");
        }
    }
    assert_eq!(
        slow_mirror.lagged.len(),
        1,
        "one lagged message per episode"
    );
    let missed = events_published - slow_mirror.events.len() as u64;
    assert!(missed > 0);
    assert_eq!(slow_mirror.lagged[0], missed);
    assert_eq!(hub.stats().dropped_events.load(Ordering::Relaxed), missed);
    assert!(hub.stats().conflations.load(Ordering::Relaxed) > 0);

    // The episode is over: the next change arrives as a patch after the held rev.
    let t = &topics[0];
    hub.patch(t, json!({"after": true})).await.unwrap();
    let next = drain(&slow);
    slow_mirror.strict = true;
    slow_mirror.apply_all(&next);
    assert_eq!(next.len(), 1);
    assert_eq!(slow_mirror.state(t), hub_state(&hub, t));
    assert!(drain(&slow).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_conflated_client_gets_one_fresh_snapshot_per_topic_in_place_of_its_patches() {
    let hub = hub_with(|c| {
        c.outbox = OutboxLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        }
    });
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let a = topic("x/a");
    let b = topic("x/b");
    hub.set(&a, json!({"n": 0})).await.unwrap(); // queued
    hub.set(&b, json!({"n": 0})).await.unwrap(); // queued: full
    for n in 1..=5 {
        hub.patch(&a, json!({"n": n})).await.unwrap();
    }
    hub.event(&b, json!("maybe dropped")).await.unwrap();
    let got = drain(&client);

    // Per topic: exactly one message, the latest state, as a snapshot.
    let states: Vec<&Value> = got
        .iter()
        .filter(|m| m["topic"].is_string() && m["type"] != "event")
        .collect();
    assert_eq!(
        by_topic(states.into_iter().cloned().collect()),
        [
            snapshot(&a, 6, json!({"n": 5})),
            snapshot(&b, 1, json!({"n": 0}))
        ],
        "{got:?}"
    );
    // One lagged message, last, counting the event if it was dropped.
    let events = got.iter().filter(|m| m["type"] == "event").count() as u64;
    assert_eq!(got.last().unwrap()["type"], "lagged", "{got:?}");
    assert_eq!(got.iter().filter(|m| m["type"] == "lagged").count(), 1);
    assert_eq!(
        got.last().unwrap()["dropped_events"].as_u64().unwrap() + events,
        1
    );

    // The episode is over: changes flow as patches again.
    hub.patch(&a, json!({"n": 6})).await.unwrap();
    assert_eq!(drain(&client), [patch(&a, 7, json!({"n": 6}))]);

    // Another episode counts afresh.
    for i in 1..=4 {
        hub.event(&b, json!(i)).await.unwrap();
    }
    assert_eq!(
        drain(&client),
        [
            event(&b, json!(1)),
            event(&b, json!(2)),
            json!({"type": "lagged", "dropped_events": 2})
        ]
    );
}

// ---------------------------------------------------------------------------------------
// A random walk: a subscriber applying what it gets always matches the hub
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Set(usize, Value),
    Patch(usize, Value),
    Delete(usize),
    Event(usize, Value),
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(Value::Null),
        2 => any::<bool>().prop_map(Value::from),
        4 => (0i64..4).prop_map(Value::from),
        2 => "[xy]{0,2}".prop_map(Value::from),
    ]
}

fn member_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            1 => prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            3 => prop::collection::btree_map("[a-c]", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-d]", member_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn any_state() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => object(),
        1 => member_value(), // scalars, arrays, null (refused)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0usize..3;
    prop_oneof![
        3 => (t.clone(), any_state()).prop_map(|(t, v)| Op::Set(t, v)),
        5 => (t.clone(), any_state()).prop_map(|(t, v)| Op::Patch(t, v)),
        1 => t.clone().prop_map(Op::Delete),
        1 => (t, leaf()).prop_map(|(t, v)| Op::Event(t, v)),
    ]
}

async fn random_walk(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let names = ["t/0", "t/1", "t/2"];
    let hub = new_hub();
    let patches = hub.connect();
    patches.subscribe(&pats(&["t/#"]), &Since::Now, None);
    let full = hub.connect();
    full.subscribe(&pats(&["t/+"]), &Since::Now, Some(Mode::Full));
    let mut patch_mirror = Mirror::strict();
    let mut full_mirror = Mirror::strict();
    // The model: rev and state per topic.
    let mut model: [(u64, Option<Value>); 3] = Default::default();
    // Every state each topic had, by rev (index 0: before creation).
    let mut history: [Vec<Option<Value>>; 3] = [vec![None], vec![None], vec![None]];

    for op in ops {
        let (k, result, expected) = match &op {
            Op::Set(k, v) => {
                let (rev, cur) = &model[*k];
                let expected = if v.is_null() {
                    Err(ErrorCode::BadRequest)
                } else if cur.as_ref() == Some(v) {
                    Ok((unchanged(*rev), cur.clone()))
                } else {
                    Ok((changed(rev + 1), Some(v.clone())))
                };
                (*k, hub.set(&topic(names[*k]), v.clone()).await, expected)
            }
            Op::Patch(k, p) => {
                let (rev, cur) = &model[*k];
                let next = merge_patch(cur.as_ref().unwrap_or(&json!({})), p);
                let expected = if next.is_null() {
                    Err(ErrorCode::BadRequest)
                } else if cur.as_ref() == Some(&next) {
                    Ok((unchanged(*rev), cur.clone()))
                } else {
                    Ok((changed(rev + 1), Some(next)))
                };
                (*k, hub.patch(&topic(names[*k]), p.clone()).await, expected)
            }
            Op::Delete(k) => {
                let (rev, cur) = &model[*k];
                let expected = match cur {
                    None => Err(ErrorCode::NotFound),
                    Some(_) => Ok((changed(rev + 1), None)),
                };
                (*k, hub.delete(&topic(names[*k])).await, expected)
            }
            Op::Event(k, data) => {
                hub.event(&topic(names[*k]), data.clone())
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = event(names[*k], data.clone());
                prop_assert_eq!(drain(&patches), vec![want.clone()]);
                prop_assert_eq!(drain(&full), vec![want]);
                continue;
            }
        };
        let got_patches = drain(&patches);
        let got_full = drain(&full);
        match (result, expected) {
            (Err(e), Err(code)) => {
                prop_assert_eq!(e.code, code, "{:?}", op);
                prop_assert!(
                    got_patches.is_empty() && got_full.is_empty(),
                    "a refused write delivered {:?}",
                    got_patches
                );
            }
            (Ok(outcome), Ok((want, state))) => {
                prop_assert_eq!(outcome, want, "{:?}", op);
                let n = usize::from(outcome.changed);
                prop_assert_eq!(got_patches.len(), n, "{:?}: {:?}", op, got_patches);
                prop_assert_eq!(got_full.len(), n, "{:?}: {:?}", op, got_full);
                for m in &got_full {
                    prop_assert!(m["type"] != "patch", "full mode got a patch: {}", m);
                }
                if let Some(m) = got_patches.first() {
                    // A patch unless creation or a member set to null forces a snapshot.
                    let was_live = model[k].1.is_some();
                    if let (Some(old_state), Some(new_state), true) =
                        (&model[k].1, &state, m["type"] == "snapshot")
                    {
                        let expressible = merge::diff(old_state, new_state);
                        prop_assert_eq!(
                            expressible,
                            merge::Diff::Replace,
                            "needless snapshot {}",
                            m
                        );
                    }
                    if !was_live {
                        prop_assert_eq!(&m["type"], "snapshot");
                    }
                    if state.is_none() {
                        prop_assert_eq!(&m["type"], "removed");
                    }
                }
                if outcome.changed {
                    history[k].push(state.clone());
                }
                model[k] = (outcome.rev, state);
            }
            (result, expected) => {
                return Err(TestCaseError::fail(format!(
                    "{op:?}: got {result:?}, expected {expected:?}"
                )));
            }
        }
        patch_mirror.apply_all(&got_patches);
        full_mirror.apply_all(&got_full);
        for (k, name) in names.iter().enumerate() {
            let hub_now = hub_state(&hub, name);
            let (rev, state) = &model[k];
            prop_assert_eq!(
                &hub_now,
                &state.clone().map(|s| (*rev, s)),
                "hub vs model for {}",
                name
            );
            prop_assert_eq!(
                &patch_mirror.state(name),
                &hub_now,
                "patch subscriber vs hub for {}",
                name
            );
            prop_assert_eq!(
                &full_mirror.state(name),
                &hub_now,
                "full subscriber vs hub for {}",
                name
            );
            if *rev > 0 {
                prop_assert_eq!(patch_mirror.rev(name), Some(*rev));
            }
        }
    }

    // A subscriber resuming from any rev it could hold ends in the same place.
    for (k, name) in names.iter().enumerate() {
        prop_assert_eq!(history[k].len() as u64, model[k].0 + 1);
        for held in 1..=model[k].0 {
            let client = hub.connect();
            client.subscribe(&pats(&[*name]), &since(&[(*name, held)]), None);
            let got = drain(&client);
            if held == model[k].0 {
                prop_assert!(got.is_empty(), "since the current rev: {:?}", got);
                continue;
            }
            let mut mirror = Mirror::lax();
            match &history[k][held as usize] {
                Some(state) => mirror.apply(&snapshot(name, held, state.clone())),
                None => mirror.apply(&removed(name, held)),
            }
            mirror.apply_all(&got);
            prop_assert_eq!(
                mirror.state(name),
                hub_state(&hub, name),
                "resumed from {}",
                held
            );
            prop_assert_eq!(mirror.rev(name), Some(model[k].0));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn a_subscriber_applying_what_it_gets_always_matches_the_hub(ops in prop::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(random_walk(ops))?;
    }
}

// ---------------------------------------------------------------------------------------
// A store that fails
// ---------------------------------------------------------------------------------------

/// An engine whose commits fail while `failing` is set.
struct FlakyEngine {
    failing: Arc<AtomicBool>,
}

impl Engine for FlakyEngine {
    fn load(&self) -> Result<Loaded, EngineError> {
        Ok(Loaded::default())
    }

    fn commit(&self, records: &[Record<'_>], _seq: u64) -> Result<(), EngineError> {
        assert!(!records.is_empty());
        if self.failing.load(Ordering::SeqCst) {
            Err(EngineError("disk unplugged".into()))
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_store_refuses_writes_with_unavailable_and_changes_nothing() {
    let failing = Arc::new(AtomicBool::new(false));
    let hub = Hub::open(
        FlakyEngine {
            failing: Arc::clone(&failing),
        },
        HubConfig::default(),
    )
    .unwrap();
    let client = hub.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("railhub/esp32-01");
    hub.set(&t, json!({"uptime": 1, "name": "esp"}))
        .await
        .unwrap();
    hub.patch(&t, json!({"uptime": 2})).await.unwrap();
    drain(&client);
    let before = hub_state(&hub, &t);
    assert_eq!(before, Some((2, json!({"uptime": 2, "name": "esp"}))));

    failing.store(true, Ordering::SeqCst);
    assert_eq!(
        hub.patch(&t, json!({"uptime": 3})).await.unwrap_err().code,
        ErrorCode::Unavailable
    );
    assert_eq!(
        hub.set(&t, json!({"other": true})).await.unwrap_err().code,
        ErrorCode::Unavailable
    );
    assert_eq!(
        hub.delete(&t).await.unwrap_err().code,
        ErrorCode::Unavailable
    );
    // Several writes queued behind a failing one all fail.
    let first = hub
        .submit(Write::Patch {
            topic: t.clone(),
            patch: json!({"uptime": 4}),
            if_rev: None,
        })
        .unwrap();
    let second = hub
        .submit(Write::Patch {
            topic: t.clone(),
            patch: json!({"uptime": 5}),
            if_rev: None,
        })
        .unwrap();
    assert_eq!(first.wait().await.unwrap_err().code, ErrorCode::Unavailable);
    assert_eq!(
        second.wait().await.unwrap_err().code,
        ErrorCode::Unavailable
    );
    // Creating a topic fails too and leaves no trace.
    let new = topic("railhub/esp32-02");
    assert_eq!(
        hub.set(&new, json!({"uptime": 1})).await.unwrap_err().code,
        ErrorCode::Unavailable
    );
    assert!(hub.get(&new).is_none());
    assert_eq!(hub_state(&hub, &t), before);
    assert!(drain(&client).is_empty(), "nothing refused is delivered");
    assert!(hub.stats().store_failures.load(Ordering::Relaxed) > 0);

    failing.store(false, Ordering::SeqCst);
    // The write is diffed against the durable state, not a refused one, and takes the next rev.
    assert_eq!(
        hub.patch(&t, json!({"uptime": 3})).await.unwrap(),
        changed(3)
    );
    assert_eq!(
        hub_state(&hub, &t),
        Some((3, json!({"uptime": 3, "name": "esp"})))
    );
    assert_eq!(
        hub.set(&new, json!({"uptime": 1})).await.unwrap(),
        changed(1)
    );
    // A write equal to a refused one is a change.
    assert_eq!(
        hub.set(&t, json!({"other": true})).await.unwrap(),
        changed(4)
    );
    assert_eq!(
        drain(&client),
        [
            patch(&t, 3, json!({"uptime": 3})),
            snapshot(&new, 1, json!({"uptime": 1})),
            patch(&t, 4, json!({"uptime": null, "name": null, "other": true})),
        ]
    );

    // A resuming client replays the history without the refused writes.
    let resumed = hub.connect();
    resumed.subscribe(&pats(&["railhub/esp32-01"]), &since(&[(&t, 2)]), None);
    assert_eq!(
        drain(&resumed),
        [
            patch(&t, 3, json!({"uptime": 3})),
            patch(&t, 4, json!({"uptime": null, "name": null, "other": true}))
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Several hubs over one shared log
// ---------------------------------------------------------------------------------------

/// A log in memory that several hubs share; each hub gets its own [`MemoryLog`] over it.
#[derive(Default)]
struct LogEntries {
    entries: Mutex<Vec<Entry>>,
    grew: Condvar,
}

/// One hub's handle on a [`LogEntries`]: appends check the topic's rev, as the Redis
/// engine's script does, and follow reads on from what this hub has read.
struct MemoryLog {
    log: Arc<LogEntries>,
    read: Mutex<usize>,
}

impl MemoryLog {
    fn over(log: &Arc<LogEntries>) -> MemoryLog {
        MemoryLog {
            log: Arc::clone(log),
            read: Mutex::new(0),
        }
    }
}

impl SharedLog for MemoryLog {
    fn load(&self) -> Result<Loaded, EngineError> {
        assert!(self.log.entries.lock().unwrap().is_empty());
        Ok(Loaded::default())
    }

    fn append(&self, appends: &[Append<'_>]) -> Result<Vec<Appended>, EngineError> {
        let mut entries = self.log.entries.lock().unwrap();
        let mut conflicted = Vec::new();
        let mut answers = Vec::new();
        for append in appends {
            let (topic, kind) = match *append {
                Append::Change {
                    topic,
                    rev,
                    state,
                    patch,
                    time_ms,
                    keep_ms: _,
                } => {
                    let (current, held) = entries
                        .iter()
                        .rev()
                        .find_map(|e| match &e.kind {
                            EntryKind::Change { rev, state, .. } if e.topic == topic => {
                                Some((*rev, state.clone()))
                            }
                            _ => None,
                        })
                        .unwrap_or((0, None));
                    if conflicted.contains(&topic) || current + 1 != rev {
                        conflicted.push(topic);
                        answers.push(Appended::Conflict {
                            rev: current,
                            state: held,
                        });
                        continue;
                    }
                    let kind = EntryKind::Change {
                        rev,
                        state: state.map(<[u8]>::to_vec),
                        patch: patch.map(<[u8]>::to_vec),
                        time_ms,
                    };
                    (topic, kind)
                }
                Append::Event { topic, message } => (
                    topic,
                    EntryKind::Event {
                        message: message.to_vec(),
                    },
                ),
            };
            let seq = entries.len() as u64 + 1;
            entries.push(Entry {
                seq,
                topic: topic.into(),
                kind,
            });
            answers.push(Appended::Stored { seq });
        }
        self.log.grew.notify_all();
        Ok(answers)
    }

    fn follow(&self, wait: Duration, _clients: u64) -> Result<Followed, EngineError> {
        let mut read = self.read.lock().unwrap();
        let entries = self.log.entries.lock().unwrap();
        let (entries, _) = self
            .log
            .grew
            .wait_timeout_while(entries, wait, |entries| entries.len() <= *read)
            .unwrap();
        let new = entries[*read..].to_vec();
        *read = entries.len();
        Ok(Followed::Entries(new))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn hubs_sharing_a_log_give_each_topic_one_rev_sequence() {
    let log = Arc::new(LogEntries::default());
    let a = Hub::open_shared(MemoryLog::over(&log), HubConfig::default()).unwrap();
    let b = Hub::open_shared(MemoryLog::over(&log), HubConfig::default()).unwrap();
    let client = a.connect();
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    let t = topic("micboard/SHURE001");

    assert_eq!(a.set(&t, json!({"battery": 80})).await, Ok(changed(1)));
    // Whether or not `b` has read `a`'s change yet, its write comes after it.
    assert_eq!(b.patch(&t, json!({"rf": -60})).await, Ok(changed(2)));
    // `a` answers a write once it has read it back, so it has read `b`'s change too.
    let other = topic("micboard/SHURE002");
    assert_eq!(a.set(&other, json!({"battery": 50})).await, Ok(changed(1)));

    assert_eq!(
        drain(&client),
        [
            snapshot("micboard/SHURE001", 1, json!({"battery": 80})),
            patch("micboard/SHURE001", 2, json!({"rf": -60})),
            snapshot("micboard/SHURE002", 1, json!({"battery": 50})),
        ]
    );
    assert_eq!(
        hub_state(&a, "micboard/SHURE001"),
        Some((2, json!({"battery": 80, "rf": -60})))
    );
    assert_eq!(log.entries.lock().unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------
// Read scopes: what a client may read
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_scoped_client_gets_only_what_it_may_read_however_broad_its_subscription() {
    let hub = new_hub();
    hub.set(&topic("railhub/esp32-01"), json!({"on": 1}))
        .await
        .unwrap();
    hub.set(&topic("secret/keys"), json!({"k": 1}))
        .await
        .unwrap();
    let client = hub.connect();
    client.set_scope(Some(pats(&["railhub/#", "public/+"])));
    assert_eq!(client.subscribe(&pats(&["#"]), &Since::Now, None), 1);
    assert_eq!(
        drain(&client),
        [snapshot("railhub/esp32-01", 1, json!({"on": 1}))]
    );

    hub.set(&topic("secret/keys"), json!({"k": 2}))
        .await
        .unwrap();
    hub.event(&topic("secret/alarm"), json!(1)).await.unwrap();
    hub.set(&topic("public/a"), json!(1)).await.unwrap();
    hub.set(&topic("public/a/deeper"), json!(1)).await.unwrap();
    hub.event(&topic("railhub/esp32-01"), json!("tick"))
        .await
        .unwrap();
    assert_eq!(
        drain(&client),
        [
            snapshot("public/a", 1, json!(1)),
            event("railhub/esp32-01", json!("tick")),
        ]
    );

    // `get` is narrowed the same way.
    assert_eq!(client.get(&pats(&["secret/#", "public/#"])), 1);
    assert_eq!(drain(&client), [snapshot("public/a", 1, json!(1))]);
}

#[tokio::test]
async fn unsubscribing_keeps_what_other_subscriptions_still_need() {
    let hub = new_hub();
    let client = hub.connect();
    client.set_scope(Some(pats(&["railhub/#"])));
    client.subscribe(&pats(&["#", "railhub/#"]), &Since::Now, None);
    assert_eq!(client.unsubscribe(&pats(&["#"])), 1);
    hub.set(&topic("railhub/a"), json!(1)).await.unwrap();
    assert_eq!(drain(&client), [snapshot("railhub/a", 1, json!(1))]);
    assert_eq!(client.unsubscribe(&pats(&["railhub/#"])), 1);
    hub.set(&topic("railhub/a"), json!(2)).await.unwrap();
    assert_eq!(drain(&client), Vec::<Value>::new());
}

#[tokio::test]
async fn a_new_scope_drops_what_it_forbids_and_sends_what_it_now_allows() {
    let hub = new_hub();
    hub.set(&topic("a/x"), json!(1)).await.unwrap();
    hub.set(&topic("b/x"), json!(1)).await.unwrap();
    let client = hub.connect();
    client.set_scope(Some(pats(&["a/#"])));
    client.subscribe(&pats(&["#"]), &Since::Now, None);
    assert_eq!(drain(&client), [snapshot("a/x", 1, json!(1))]);

    // Widened: b/x arrives as a snapshot, a/x is not sent again.
    assert_eq!(client.set_scope(Some(pats(&["a/#", "b/#"]))), 1);
    assert_eq!(drain(&client), [snapshot("b/x", 1, json!(1))]);

    // Narrowed: a/x no longer arrives.
    client.set_scope(Some(pats(&["b/#"])));
    hub.set(&topic("a/x"), json!(2)).await.unwrap();
    hub.set(&topic("b/x"), json!(2)).await.unwrap();
    assert_eq!(drain(&client), [patch("b/x", 2, json!(2))]);

    // Unrestricted again.
    client.set_scope(None);
    assert_eq!(drain(&client), [snapshot("a/x", 2, json!(2))]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn nothing_outside_the_scope_ever_arrives(
        scope in prop::collection::vec("(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?|#", 1..4),
        subscriptions in prop::collection::vec("(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?|#", 1..4),
        writes in prop::collection::vec(("(a|b|c)(/(a|b|c)){0,3}", any::<bool>()), 1..30),
    ) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
            let hub = new_hub();
            let scope: Vec<Pattern> = scope.iter().map(|p| pat(p)).collect();
            let subscriptions: Vec<Pattern> = subscriptions.iter().map(|p| pat(p)).collect();
            let client = hub.connect();
            client.set_scope(Some(scope.clone()));
            client.subscribe(&subscriptions, &Since::Now, None);
            let mut expected = std::collections::BTreeSet::new();
            for (i, (name, is_event)) in writes.iter().enumerate() {
                let t = topic(name);
                if *is_event {
                    hub.event(&t, json!(i)).await.unwrap();
                } else {
                    hub.set(&t, json!(i)).await.unwrap();
                }
                if scope.iter().any(|p| p.matches(name)) && subscriptions.iter().any(|p| p.matches(name)) {
                    expected.insert(name.clone());
                }
            }
            let got: std::collections::BTreeSet<String> = drain(&client)
                .iter()
                .map(|m| m["topic"].as_str().unwrap().to_string())
                .collect();
            prop_assert_eq!(got, expected);
            Ok(())
        })?;
    }
}
