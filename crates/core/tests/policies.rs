//! The hub's topic policies through the embedded API (`Hub` and `Client`, as an
//! application embedding the core uses them): schemas refuse writes on every path.

use serde_json::{Value, json};
use statecast_core::{
    Client, ErrorCode, Hub, HubConfig, MemoryEngine, Outcome, Pattern, Policies, Schema, Since,
    Topic, TopicPolicy, Write,
};

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

fn pat(text: &str) -> Pattern {
    Pattern::new(text).unwrap()
}

fn hub_with(policies: Vec<TopicPolicy>) -> Hub {
    let config = HubConfig {
        policies: Policies::new(policies),
        ..HubConfig::default()
    };
    Hub::open(MemoryEngine, config).unwrap()
}

fn changed(rev: u64) -> Outcome {
    Outcome { rev, changed: true }
}

fn drain(client: &Client) -> Vec<Value> {
    let mut frames = Vec::new();
    client.drain(&mut frames, 1024);
    frames
        .iter()
        .map(|f| serde_json::from_slice(&f.bytes).unwrap())
        .collect()
}

fn state_of(hub: &Hub, name: &str) -> Option<(u64, Value)> {
    let s = hub.get(name)?;
    Some((s.rev, serde_json::from_slice(&s.state).unwrap()))
}

#[tokio::test(flavor = "current_thread")]
async fn the_embedded_api_refuses_a_state_its_schema_refuses_and_publishes_nothing() {
    let schema = Schema::compile(
        "inline",
        json!({"type": "object", "required": ["outputs"],
               "properties": {"outputs": {"type": "array"}}}),
    )
    .unwrap();
    let hub = hub_with(vec![TopicPolicy {
        pattern: pat("railhub/+"),
        schema: Some(schema),
        stale_after: None,
        history: None,
    }]);
    let client = hub.connect();
    client.subscribe(&[pat("#")], &Since::Now, None);
    let t = topic("railhub/esp32-01");
    assert_eq!(hub.set(&t, json!({"outputs": []})).await, Ok(changed(1)));
    for write in [
        Write::Set {
            topic: t.clone(),
            state: json!({"outputs": 3}),
            if_rev: None,
        },
        Write::Patch {
            topic: t.clone(),
            patch: json!({"outputs": null}),
            if_rev: None,
        },
    ] {
        let Err(error) = hub.submit(write) else {
            panic!("a state its schema refuses was taken");
        };
        assert_eq!(error.code, ErrorCode::InvalidState, "{error}");
        assert!(error.details.is_some(), "{error:?}");
    }
    assert_eq!(
        state_of(&hub, "railhub/esp32-01"),
        Some((1, json!({"outputs": []})))
    );
    let pushed = drain(&client);
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(
        (pushed[0]["type"].as_str(), pushed[0]["rev"].as_u64()),
        (Some("snapshot"), Some(1))
    );
    // Other topics are free.
    assert_eq!(hub.set(&topic("other/x"), json!(1)).await, Ok(changed(1)));
}

/// The message types a client drained, with `stale` messages as `stale:true|false`.
fn kinds(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m["type"].as_str().unwrap_or("?") {
            "stale" => format!("stale:{}", m["stale"]),
            "snapshot" if m["stale"] == true => "snapshot(stale)".into(),
            other => other.to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_marked_stale_is_fresh_again_on_its_next_write_even_an_unchanged_one() {
    let hub = hub_with(Vec::new());
    let t = topic("micboard/SHURE001");
    hub.set(&t, json!({"battery": 80})).await.unwrap();
    let client = hub.connect();
    client.subscribe(&[pat("micboard/#")], &Since::Now, None);
    assert_eq!(kinds(&drain(&client)), ["snapshot"]);

    hub.mark_stale(&t);
    hub.mark_stale(&t); // once is enough: no second message
    assert_eq!(hub.stale_count(), 1);
    assert!(hub.get(t.as_str()).unwrap().stale);
    assert_eq!(kinds(&drain(&client)), ["stale:true"]);
    // A new subscriber's snapshot says so.
    let late = hub.connect();
    late.subscribe(&[pat("#")], &Since::Now, None);
    assert_eq!(kinds(&drain(&late)), ["snapshot(stale)"]);

    // A write that changes nothing freshens it (no new rev); once it has gone through the
    // commit thread, the subscriber is told.
    let same = hub.set(&t, json!({"battery": 80})).await.unwrap();
    assert!(!same.changed);
    // Freshening is queued behind the answer: a change after it is published after it.
    hub.set(&t, json!({"battery": 79})).await.unwrap();
    assert_eq!(kinds(&drain(&client)), ["stale:false", "patch"]);
    assert_eq!(hub.stale_count(), 0);

    // A change freshens it too, `stale:false` first.
    hub.mark_stale(&t);
    hub.patch(&t, json!({"battery": 78})).await.unwrap();
    assert_eq!(
        kinds(&drain(&client)),
        ["stale:true", "stale:false", "patch"]
    );
    // A removed topic is not counted stale.
    hub.mark_stale(&t);
    hub.delete(&t).await.unwrap();
    assert_eq!(hub.stale_count(), 0);
    hub.mark_stale(&t); // removed: nothing
    assert_eq!(kinds(&drain(&client)), ["stale:true", "removed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_client_learns_a_topic_went_stale_while_it_was_away() {
    let policy = TopicPolicy {
        pattern: pat("mic/+"),
        schema: None,
        stale_after: Some(std::time::Duration::from_secs(3600)),
        history: None,
    };
    let hub = hub_with(vec![policy]);
    let (a, b) = (topic("mic/a"), topic("other/b"));
    hub.set(&a, json!(1)).await.unwrap();
    hub.set(&b, json!(1)).await.unwrap();
    hub.mark_stale(&a);
    hub.mark_stale(&b);
    let revs = [("mic/a".to_string(), 1), ("other/b".to_string(), 1)].into();
    let client = hub.connect();
    client.subscribe(&[pat("#")], &Since::Revs(revs), None);
    let got = drain(&client);
    let mut told: Vec<(String, Value)> = got
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap_or("").to_owned(),
                m["stale"].clone(),
            )
        })
        .collect();
    told.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        told,
        [
            ("mic/a".into(), json!(true)),
            ("other/b".into(), json!(true))
        ],
        "{got:?}"
    );
    // Fresh again: a topic under a stale_after policy is told fresh on resume; one
    // without a policy that is fresh says nothing.
    hub.set(&a, json!(1)).await.unwrap();
    hub.set(&b, json!(1)).await.unwrap();
    // Those changed nothing: they freshen their topics through the commit thread, which a
    // change answered after them has passed.
    hub.set(&topic("z/z"), json!(1)).await.unwrap();
    let revs = [("mic/a".to_string(), 1), ("other/b".to_string(), 1)].into();
    let again = hub.connect();
    again.subscribe(&[pat("mic/#"), pat("other/#")], &Since::Revs(revs), None);
    let got = drain(&again);
    assert_eq!(kinds(&got), ["stale:false"], "{got:?}");
    assert_eq!(got[0]["topic"], "mic/a");
}
