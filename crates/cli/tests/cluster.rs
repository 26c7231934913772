//! Several hubs sharing one Redis (`--cluster`): one rev sequence per topic on every node
//! under concurrent writers, resuming on another node, a node killed mid-stream, Redis
//! stopped and restarted, and commands routed to the node that owns the target.
//!
//! Tests share the machine's Redis (127.0.0.1:6379) with a key prefix of their own, which
//! they delete at the end; the outage test starts a `redis-server` of its own.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{OwnRedis, RedisPrefix, SHARED_REDIS, Server, Sse, Start, Ws, merge_apply, within};
use serde_json::{Value, json};

/// Starts `n` nodes of one cluster.
fn nodes(url: &str, prefix: &RedisPrefix, n: usize, extra: &[&str]) -> Vec<Server> {
    (0..n)
        .map(|i| node(url, prefix, &format!("n{i}"), extra))
        .collect()
}

fn node(url: &str, prefix: &RedisPrefix, id: &str, extra: &[&str]) -> Server {
    let mut args = common::cluster_args(url, prefix, id);
    args.extend_from_slice(extra);
    Server::start(&args)
}

async fn subscribe(ws: &mut Ws, patterns: Value, since: Option<Value>) -> Vec<Value> {
    let mut request = json!({"type": "subscribe", "id": "sub", "patterns": patterns});
    if let Some(since) = since {
        request["since"] = since;
    }
    let mut seen = ws.request(request).await;
    let result = seen.pop().expect("a result");
    assert_eq!(result["ok"], true, "subscribe failed: {result}");
    seen
}

/// Reads until every topic in `want` has reached its rev; returns what was read.
async fn read_until_revs(ws: &mut Ws, want: &HashMap<String, u64>) -> Vec<Value> {
    let mut at: HashMap<String, u64> = HashMap::new();
    let mut seen = Vec::new();
    while want
        .iter()
        .any(|(t, r)| at.get(t).copied().unwrap_or(0) < *r)
    {
        let message = ws.recv_json().await;
        if let (Some(topic), Some(rev)) = (message["topic"].as_str(), message["rev"].as_u64()) {
            at.insert(topic.to_string(), rev);
        }
        seen.push(message);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_three_nodes_make_one_rev_sequence_everywhere() {
    let prefix = RedisPrefix::new("test-race");
    let cluster = nodes(SHARED_REDIS, &prefix, 3, &[]);
    let topics = ["race/a", "race/b", "race/c"];
    let mut subscribers = Vec::new();
    for server in &cluster {
        for _ in 0..2 {
            let mut ws = server.ws().await;
            assert!(subscribe(&mut ws, json!(["race/#"]), None).await.is_empty());
            subscribers.push(ws);
        }
    }
    // Presence: each node reports its clients, and every node sees the cluster's total.
    let health = within("the cluster's presence figures", async {
        loop {
            let health = cluster[2].get("/api/health").await.json();
            if health["cluster"]["clients"] == 6 {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let ids: Vec<_> = health["cluster"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["id"].clone(), n["clients"].clone()))
        .collect();
    assert_eq!(
        ids,
        [
            (json!("n0"), json!(2)),
            (json!("n1"), json!(2)),
            (json!("n2"), json!(2))
        ]
    );
    assert_eq!(health["clients"], 2, "this node's own clients");
    let metrics = cluster[2].metrics().await;
    for node in ["n0", "n1", "n2"] {
        let line = format!("statecast_cluster_node_clients{{node=\"{node}\"}} 2");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert_eq!(cluster[2].metric("statecast_cluster_up").await, 1.0);
    // Every node writes every topic at once; each patch changes the state.
    const WRITES: usize = 40;
    let mut writers = Vec::new();
    for (n, server) in cluster.iter().enumerate() {
        let base = server.http();
        writers.push(tokio::spawn(async move {
            let client = common::http_client();
            for i in 0..WRITES {
                let topic = topics[i % topics.len()];
                let response = client
                    .patch(format!("{base}/api/state/{topic}"))
                    .json(&json!({format!("n{n}"): i}))
                    .send()
                    .await
                    .expect("PATCH");
                assert_eq!(response.status(), 200, "{:?}", response.text().await);
            }
        }));
    }
    for writer in writers {
        within("the writers", writer).await.expect("writer");
    }
    // Every write is one rev of its topic. A node answers its writer once the change is in
    // the stream, which the other nodes may not have read yet: every subscriber (two per
    // node) reaching the last revs shows that every node has published them.
    let mut want = HashMap::new();
    for (k, topic) in topics.iter().enumerate() {
        let writes = (0..WRITES).filter(|i| i % topics.len() == k).count() * cluster.len();
        want.insert(topic.to_string(), writes as u64);
    }
    let mut sequences = Vec::new();
    for ws in &mut subscribers {
        sequences.push(read_until_revs(ws, &want).await);
    }
    for topic in topics {
        let state = cluster[0].get(&format!("/api/state/{topic}")).await.json();
        assert_eq!(state["rev"], want[topic], "{topic}: {state}");
    }
    let mut conflicts = 0.0;
    for server in &cluster {
        conflicts += server.metric("statecast_cluster_conflicts_total").await;
    }
    eprintln!("write batches retried after a conflict: {conflicts}");
    // Every node has the same final state.
    for server in &cluster[1..] {
        for topic in topics {
            let here = server.get(&format!("/api/state/{topic}")).await.json();
            let there = cluster[0].get(&format!("/api/state/{topic}")).await.json();
            assert_eq!(here, there, "{topic} differs between nodes");
        }
    }
    // Every subscriber saw exactly the same messages, revs 1.. without gaps, and its
    // patches rebuild the final state.
    for sequence in &sequences[1..] {
        assert_eq!(
            sequence, &sequences[0],
            "two subscribers saw different changes"
        );
    }
    let mut states: HashMap<String, (u64, Value)> = HashMap::new();
    for message in &sequences[0] {
        let topic = message["topic"].as_str().expect("topic").to_string();
        let rev = message["rev"].as_u64().expect("rev");
        let entry = states.entry(topic).or_insert((0, json!({})));
        assert_eq!(rev, entry.0 + 1, "revs go up one by one: {message}");
        match message["type"].as_str() {
            Some("patch") => merge_apply(&mut entry.1, &message["patch"]),
            Some("snapshot") => entry.1 = message["state"].clone(),
            other => panic!("unexpected {other:?}: {message}"),
        }
        entry.0 = rev;
    }
    for topic in topics {
        let stored = cluster[2].get(&format!("/api/state/{topic}")).await.json();
        assert_eq!(states[topic].1, stored["state"], "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_only_the_missed_patches() {
    let prefix = RedisPrefix::new("test-resume");
    let cluster = nodes(SHARED_REDIS, &prefix, 2, &[]);
    let topic = "resume/mic";
    assert_eq!(
        cluster[0]
            .put(&format!("/api/state/{topic}"), &json!({"battery": 90}))
            .await
            .status,
        200
    );
    let mut ws = cluster[0].ws().await;
    let snapshot = subscribe(&mut ws, json!(["resume/#"]), None).await;
    assert_eq!(snapshot[0]["rev"], 1);
    drop(ws);
    for battery in [89, 88, 87] {
        let r = cluster[1]
            .patch(&format!("/api/state/{topic}"), &json!({"battery": battery}))
            .await;
        assert_eq!(r.status, 200);
    }
    // On a node that ran meanwhile, and on one started after the writes (its history
    // comes from the Redis stream).
    let late = node(SHARED_REDIS, &prefix, "late", &[]);
    for server in [&cluster[1], &late] {
        let mut ws = server.ws().await;
        let missed = subscribe(&mut ws, json!(["resume/#"]), Some(json!({topic: 1}))).await;
        let revs: Vec<_> = missed
            .iter()
            .map(|m| (m["type"].clone(), m["rev"].clone()))
            .collect();
        assert_eq!(
            revs,
            [
                (json!("patch"), json!(2)),
                (json!("patch"), json!(3)),
                (json!("patch"), json!(4))
            ],
            "{missed:?}"
        );
        assert_eq!(missed[2]["patch"], json!({"battery": 87}));
        // Events cross nodes too.
        let sent = cluster[0]
            .post(&format!("/api/events/{topic}"), &json!({"clip": true}))
            .await;
        assert_eq!(sent.status, 202, "{:?}", sent.json());
        let event = ws.recv_json().await;
        assert_eq!(
            (event["type"].clone(), event["data"].clone()),
            (json!("event"), json!({"clip": true}))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_resumes_on_another_node_from_its_last_event_id() {
    let prefix = RedisPrefix::new("test-sse");
    let cluster = nodes(SHARED_REDIS, &prefix, 2, &[]);
    let r = cluster[0].put("/api/state/sse/a", &json!({"x": 1})).await;
    assert_eq!(r.status, 200);
    let mut sse = Sse::open(&cluster[0], &["sse/#"], None).await;
    assert_eq!(sse.next().await.json()["rev"], 1);
    let r = cluster[0].patch("/api/state/sse/a", &json!({"x": 2})).await;
    assert_eq!(r.status, 200);
    assert_eq!(sse.next().await.json()["rev"], 2);
    let last_id = sse.last_id.clone().expect("the stream carried an id");
    drop(sse);
    for x in [3, 4] {
        let r = cluster[1].patch("/api/state/sse/a", &json!({"x": x})).await;
        assert_eq!(r.status, 200);
    }
    let r = cluster[1].put("/api/state/sse/b", &json!({"y": 1})).await;
    assert_eq!(r.status, 200);
    // The other node knows the cursor (same epoch, same sequence numbers): only what was
    // missed arrives, the patches as patches.
    let mut sse = Sse::open(&cluster[1], &["sse/#"], Some(&last_id)).await;
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(sse.next().await.json());
    }
    missed.sort_by_key(|m| (m["topic"].as_str().map(str::to_owned), m["rev"].as_u64()));
    assert_eq!(
        missed,
        [
            json!({"type": "patch", "topic": "sse/a", "rev": 3, "patch": {"x": 3}}),
            json!({"type": "patch", "topic": "sse/a", "rev": 4, "patch": {"x": 4}}),
            json!({"type": "snapshot", "topic": "sse/b", "rev": 1, "state": {"y": 1}}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fell_behind_a_trimmed_stream_resyncs_its_clients() {
    let prefix = RedisPrefix::new("test-behind");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("short.toml");
    std::fs::write(&config, "[cluster]\nstream_len = 10\n").expect("write config");
    let config = config.to_string_lossy().to_string();
    let cluster = nodes(SHARED_REDIS, &prefix, 2, &["--config", &config]);
    let mut ws = cluster[1].ws().await;
    subscribe(&mut ws, json!(["behind/#"]), None).await;
    let r = cluster[0]
        .put("/api/state/behind/x", &json!({"n": 0}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(ws.recv_json().await["rev"], 1);
    // Pause node 1 (SIGSTOP) while far more changes than the stream keeps go by.
    let pid = cluster[1].pid().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    for n in 1..=600 {
        let r = cluster[0]
            .put("/api/state/behind/x", &json!({"n": n}))
            .await;
        assert_eq!(r.status, 200);
    }
    signal("-CONT");
    // It cannot prove continuity, so it starts over: a fresh snapshot, not 600 patches.
    let message = within("the resync snapshot", async {
        loop {
            let m = ws.recv_json().await;
            if m["rev"] == 601 {
                return m;
            }
            assert_ne!(
                m["type"], "patch",
                "patches cannot bridge a trimmed stream: {m}"
            );
        }
    })
    .await;
    assert_eq!(message["type"], "snapshot");
    assert_eq!(message["state"], json!({"n": 600}));
    assert!(cluster[1].metric("statecast_cluster_resyncs_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_no_acknowledged_write() {
    let prefix = RedisPrefix::new("test-kill");
    let mut cluster = nodes(SHARED_REDIS, &prefix, 2, &[]);
    let topic = "kill/counter";
    let mut watcher = cluster[1].ws().await;
    subscribe(&mut watcher, json!(["kill/#"]), None).await;
    let acked = Arc::new(AtomicU64::new(0));
    let base = cluster[0].http();
    let writer_acked = Arc::clone(&acked);
    let writer = tokio::spawn(async move {
        let client = common::http_client();
        for n in 1.. {
            let sent = client
                .put(format!("{base}/api/state/{topic}"))
                .json(&json!({"n": n}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 200 => writer_acked.store(n, Ordering::SeqCst),
                _ => return,
            }
        }
    });
    // Kill the writer's node once it has acknowledged a good number of writes (the
    // watcher's messages mark the writer's progress; it may see a change before the
    // writer's node has answered it).
    let mut last_seen = 0;
    while acked.load(Ordering::SeqCst) < 50 {
        let message = watcher.recv_json().await;
        last_seen = message["rev"].as_u64().unwrap_or(last_seen);
    }
    cluster[0].kill9();
    within("the writer to stop", writer).await.expect("writer");
    let acknowledged = acked.load(Ordering::SeqCst);
    assert!(acknowledged >= 50);
    // The survivor holds every acknowledged write (perhaps one more, whose answer died
    // with the node), and its subscriber gets there. The writer's node answers once it
    // has read its own change back from the stream, which the survivor may not have yet:
    // wait until the survivor has published it (rev n is the n-th write).
    while last_seen < acknowledged {
        let message = watcher.recv_json().await;
        last_seen = message["rev"].as_u64().unwrap_or(last_seen);
    }
    let state = cluster[1].get(&format!("/api/state/{topic}")).await.json();
    let n = state["state"]["n"].as_u64().expect("n");
    assert!(
        n == acknowledged || n == acknowledged + 1,
        "stored n = {n}, acknowledged {acknowledged}"
    );
    let rev = state["rev"].as_u64().expect("rev");
    let mut want = HashMap::new();
    want.insert(topic.to_string(), rev);
    if last_seen < rev {
        read_until_revs(&mut watcher, &want).await;
    }
    // A client of the dead node resumes on the survivor.
    let mut resumed = cluster[1].ws().await;
    let missed = subscribe(&mut resumed, json!(["kill/#"]), Some(json!({topic: 10}))).await;
    assert_eq!(missed.len() as u64, rev - 10, "one patch per missed rev");
    assert_eq!(missed.last().expect("last")["rev"], rev);
}

/// A device only one node can reach (an HTTP server answering with what it got), and that
/// node's config file routing `lamp/+` to it.
async fn lamp_device() -> (tempfile::TempDir, String) {
    let device = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let device_addr = device.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/cmd",
        axum::routing::post(
            |body: axum::Json<Value>| async move { axum::Json(json!({"got": body.0})) },
        ),
    );
    tokio::spawn(async move { axum::serve(device, app).await });
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("owner.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\ntarget = \"lamp/+\"\ntype = \"http\"\nmethod = \"POST\"\n\
             url = \"http://{device_addr}/cmd\"\nbody = {{ name = \"{{name}}\", args = \"{{args}}\" }}\n"
        ),
    )
    .expect("write config");
    let config = config.to_string_lossy().to_string();
    (dir, config)
}

/// Sends a command to `server` until it is forwarded (the owner's routes and presence
/// reach the other nodes through Redis within seconds); returns the answer.
async fn forwarded(server: &Server, level: u64) -> Value {
    let answer = within("the command to be forwarded", async {
        loop {
            let r = server
                .post(
                    "/api/commands/lamp/kitchen",
                    &json!({"name": "on", "args": {"level": level}}),
                )
                .await;
            if r.status == 200 {
                return r.json();
            }
            assert!(
                ["no_route", "unavailable", "timeout"].contains(&r.error_code().as_str()),
                "{:?}",
                r.json()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        answer["body"]["got"],
        json!({"name": "on", "args": {"level": level}})
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_node_whose_route_owns_the_target() {
    let prefix = RedisPrefix::new("test-cmd");
    let (_dir, config) = lamp_device().await;
    let plain = node(SHARED_REDIS, &prefix, "n0", &[]);
    let owner = node(SHARED_REDIS, &prefix, "n1", &["--config", &config]);
    forwarded(&plain, 3).await;
    // A target no node routes is still `no_route`, answered at once.
    let r = plain
        .post(
            "/api/commands/nothing/here",
            &json!({"name": "on", "args": {}}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "no_route");
    drop(owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_cross_nodes_again_after_redis_restarts() {
    let mut redis = OwnRedis::start();
    let prefix = RedisPrefix::new("test-cmd-restart");
    let (_dir, config) = lamp_device().await;
    let plain = node(&redis.url(), &prefix, "n0", &[]);
    let owner = node(&redis.url(), &prefix, "n1", &["--config", &config]);
    forwarded(&plain, 1).await;
    redis.kill();
    wait_health(&plain, "degraded").await;
    redis.launch();
    wait_health(&plain, "ok").await;
    wait_health(&owner, "ok").await;
    // The relays subscribe again by themselves.
    forwarded(&plain, 2).await;
}

async fn wait_health(server: &Server, status: &str) -> Value {
    within(&format!("health {status}"), async {
        loop {
            let health = server.get("/api/health").await.json();
            if health["status"] == status {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_mid_stream_loses_nothing_acknowledged() {
    let mut redis = OwnRedis::start();
    let prefix = RedisPrefix::new("test-outage");
    let cluster = nodes(&redis.url(), &prefix, 2, &[]);
    let topic = "outage/sensor";
    let mut watcher = cluster[1].ws().await;
    subscribe(&mut watcher, json!(["outage/#"]), None).await;
    let mut acknowledged = Vec::new();
    for n in 1..=20 {
        let r = cluster[0]
            .patch(&format!("/api/state/{topic}"), &json!({format!("k{n}"): n}))
            .await;
        assert_eq!(r.status, 200);
        acknowledged.push(n);
    }
    redis.kill();
    let health = wait_health(&cluster[0], "degraded").await;
    assert!(
        health["degraded"]
            .as_str()
            .is_some_and(|d| d.contains("unreachable")),
        "{health}"
    );
    assert_eq!(cluster[0].metric("statecast_cluster_up").await, 0.0);
    // Writes are refused, never acknowledged; cached state is still served.
    let refused = cluster[0]
        .patch(&format!("/api/state/{topic}"), &json!({"lost": true}))
        .await;
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.error_code(), "unavailable");
    let cached = cluster[1].get(&format!("/api/state/{topic}")).await.json();
    assert_eq!(cached["state"]["k20"], 20);
    redis.launch();
    wait_health(&cluster[0], "ok").await;
    wait_health(&cluster[1], "ok").await;
    for n in 21..=30 {
        let r = cluster[1]
            .patch(&format!("/api/state/{topic}"), &json!({format!("k{n}"): n}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        acknowledged.push(n);
    }
    // Both nodes hold every acknowledged write and nothing refused.
    for server in &cluster {
        let state = server.get(&format!("/api/state/{topic}")).await.json();
        for n in &acknowledged {
            assert_eq!(state["state"][format!("k{n}")], *n, "{state}");
        }
        assert!(state["state"].get("lost").is_none());
        assert_eq!(state["rev"], 30);
    }
    // The subscriber followed through and ends on the right state.
    let mut want = HashMap::new();
    want.insert(topic.to_string(), 30);
    let seen = read_until_revs(&mut watcher, &want).await;
    assert_eq!(
        seen[0]["type"], "snapshot",
        "the topic's creation: {}",
        seen[0]
    );
    let mut state = json!({});
    for message in &seen {
        match message["type"].as_str() {
            Some("patch") => merge_apply(&mut state, &message["patch"]),
            Some("snapshot") => state = message["state"].clone(),
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    let stored = cluster[1].get(&format!("/api/state/{topic}")).await.json();
    assert_eq!(state, stored["state"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_is_not_written_over() {
    let mut redis = OwnRedis::start();
    let prefix = RedisPrefix::new("test-amnesia");
    let server = node(&redis.url(), &prefix, "n0", &[]);
    let r = server.put("/api/state/amnesia/x", &json!({"v": 1})).await;
    assert_eq!(r.status, 200);
    redis.kill();
    // A Redis that comes back empty (its files lost) holds none of the acknowledged state.
    for entry in std::fs::read_dir(redis.dir()).expect("redis dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).expect("remove");
        } else {
            std::fs::remove_file(path).expect("remove");
        }
    }
    redis.launch();
    let health = within("the node to refuse the emptied Redis", async {
        loop {
            let health = server.get("/api/health").await.json();
            if health["degraded"]
                .as_str()
                .is_some_and(|d| d.contains("epoch"))
            {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(health["status"], "degraded");
    let refused = server.put("/api/state/amnesia/x", &json!({"v": 2})).await;
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(
        server.get("/api/state/amnesia/x").await.json()["state"],
        json!({"v": 1})
    );
}
