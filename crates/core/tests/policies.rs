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
