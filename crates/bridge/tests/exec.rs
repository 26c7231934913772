//! The `exec` source with real child processes (`sh -c` scripts). The long-running ones end
//! in `exec sleep`, so the process the source started is the one it kills when the bridge
//! stops.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rules_every_line_is_an_event() {
    let hub = hub();
    let mut watch = Watch::new(&hub, &["pactl/#", "_sources/#"]);
    let _bridge = start(
        &hub,
        r#"
        [[source]]
        name = "pactl"
        type = "exec"
        command = ["sh", "-c", "echo \"Event 'change' on sink #3\"; echo 'to stderr' >&2; echo; echo '{\"x\": 1}'; exec sleep 20"]
        topic = "pactl/events"
        "#,
    );
    watch
        .until("two events", |w| {
            w.frames.iter().filter(|f| f["type"] == "event").count() >= 2
        })
        .await;
    let events: Vec<Value> = watch
        .frames
        .iter()
        .filter(|f| f["type"] == "event")
        .cloned()
        .collect();
    assert_eq!(
        events,
        [
            json!({"type": "event", "topic": "pactl/events", "data": {"line": "Event 'change' on sink #3"}}),
            json!({"type": "event", "topic": "pactl/events", "data": {"x": 1}}),
        ]
    );
    assert!(hub.get("pactl/events").is_none(), "events store nothing");
    let h = state(&hub, &health_topic("pactl")).expect("health");
    assert_eq!(h["type"], "exec");
    assert_eq!(h["status"], "online", "{h}");
    assert_eq!(h["error_count"], 0, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_turn_text_and_json_lines_into_state() {
    let hub = hub();
    let mut watch = Watch::new(&hub, &["audio/#", "_sources/#"]);
    let script = [
        "echo 'warming up' >&2",
        "echo \"Event 'change' on sink #3\"",
        "echo 'noise nobody matches'",
        "echo '{\"kind\": \"volume\", \"sink\": \"3\", \"level\": 40}'",
        "echo 'more stderr' >&2",
        "echo \"Event 'new' on sink #4\"",
        "echo '{\"kind\": \"volume\", \"sink\": \"4\", \"level\": 10}'",
        "exec sleep 20",
    ]
    .join("; ");
    let _bridge = start(
        &hub,
        &format!(
            r#"
            [[source]]
            name = "audio"
            type = "exec"
            shell = """{script}"""
            topic = "audio/unused"

            [[source.rule]]
            regex = "Event '(?P<event>\\w+)' on sink #(?P<index>\\d+)"
            action = "set"
            topic = "audio/sink/{{msg.index}}"

            [[source.rule]]
            match = {{ kind = "volume" }}
            action = "patch"
            select = "/level"
            into = "/volume"
            topic = "audio/sink/{{msg.sink}}"
            "#
        ),
    );
    watch
        .state_where("audio/sink/4", "the last line's write", |s| {
            s["volume"] == 10
        })
        .await;
    assert_eq!(
        state(&hub, "audio/sink/3"),
        Some(json!({"event": "change", "index": "3", "volume": 40}))
    );
    assert_eq!(
        state(&hub, "audio/sink/4"),
        Some(json!({"event": "new", "index": "4", "volume": 10}))
    );
    assert!(hub.get("audio/unused").is_none());
    let h = state(&hub, &health_topic("audio")).unwrap();
    assert_eq!(
        h["status"], "online",
        "stderr does not break the source: {h}"
    );
    assert_eq!(h["error_count"], 0, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_is_restarted() {
    let counter = std::env::temp_dir().join(unique("statecast-bridge-exec-runs"));
    let hub = hub();
    let mut watch = Watch::new(&hub, &["runs/#", "_sources/#"]);
    let _bridge = start(
        &hub,
        &format!(
            r#"
            [[source]]
            name = "once"
            type = "exec"
            shell = '''n=$(cat '{file}' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{file}'; echo "run $n" >&2; echo "{{\"run\": $n}}"; exit 3'''
            topic = "runs/last"

            [[source.rule]]
            action = "set"
            "#,
            file = counter.display()
        ),
    );
    let health = health_topic("once");
    watch
        .state_where("runs/last", "the second run", |s| s["run"] == 2)
        .await;
    let h = watch
        .state_where(&health, "the first exit to be recorded", |h| {
            h["error_count"].as_u64() >= Some(1)
        })
        .await;
    let error = h["last_error"].as_str().unwrap();
    assert!(error.contains("exited"), "{error}");
    assert!(error.contains('3'), "the exit status is named: {error}");
    let runs: Vec<Value> = watch
        .history("runs/last")
        .into_iter()
        .flatten()
        .map(|s| s["run"].clone())
        .collect();
    assert_eq!(runs[..2], [json!(1), json!(2)]);
    let _ = std::fs::remove_file(&counter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_does_not_exist_is_reported() {
    let hub = hub();
    let mut watch = Watch::new(&hub, &["_sources/#"]);
    let _bridge = start(
        &hub,
        r#"
        [[source]]
        name = "missing"
        type = "exec"
        command = ["/nonexistent/statecast-test-program"]
        topic = "x/y"
        "#,
    );
    let h = watch
        .state_where(&health_topic("missing"), "the failed start", |h| {
            h["error_count"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(h["status"], "offline");
    let error = h["last_error"].as_str().unwrap();
    assert!(error.contains("cannot start"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_needs_exactly_one_of_command_and_shell() {
    let hub = hub();
    let both = config(
        r#"
        [[source]]
        name = "both"
        type = "exec"
        command = ["true"]
        shell = "true"
        topic = "x/y"
        "#,
    );
    let error = statecast_bridge::Bridge::start(&hub, both, statecast_bridge::Handlers::new())
        .err()
        .expect("refused");
    assert!(
        error.contains("\"both\""),
        "the error names the source: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_bridge_ends_what_a_shell_command_started() {
    let hub = hub();
    let mut watch = Watch::new(&hub, &["bg/#"]);
    let bridge = start(
        &hub,
        r#"
        [[source]]
        name = "bg"
        type = "exec"
        shell = "sleep 30 & echo $!; wait"
        topic = "bg/pid"
        "#,
    );
    watch
        .until("the background pid", |w| {
            w.frames.iter().any(|f| f["type"] == "event")
        })
        .await;
    let event = watch.frames.iter().find(|f| f["type"] == "event").unwrap();
    let pid: u32 = event["data"]
        .as_u64()
        .expect("the pid line is a JSON number") as u32;
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    assert!(alive(), "the background sleep runs");
    drop(bridge);
    within("the background sleep to be killed", async {
        while alive() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}
