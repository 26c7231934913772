//! Chaos under write load, with the real binary and `redis-server`s of the tests' own: a
//! cluster of hubs (`--cluster`) while Redis is killed and restarted, while one hub is cut
//! off from Redis for 30 s (inside a network namespace the test makes, with iptables), and
//! while a disk fills (a hub's data directory, then Redis's). Each case ends with the
//! cluster's promises checked (`chaos/watch.rs`): no acknowledged write lost, no write
//! applied twice, one strictly increasing rev sequence per topic on every hub's
//! subscriber, the same everywhere; writes that cannot be stored answered 503
//! `unavailable` in bounded time; health degraded, then ok. The figures they print are the
//! ones in docs/cluster.md ("Failure cases tested").
//!
//! Root is needed (mounts, a network namespace): without it the tests fail, saying so.

mod common;
#[path = "chaos/load.rs"]
mod load;
#[path = "chaos/watch.rs"]
mod watch;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Netns, OwnRedis, RedisSetup, Server, Start, Tmpfs, fill_disk, is_root};
use load::{Answer, Load};
use serde_json::{Value, json};
use watch::{Watcher, check_all};

/// Every hub's keys in the tests' own Redis.
const PREFIX: &str = "chaos";

/// A hub of the cluster on `url`, named `n<i>`.
fn hub(url: &str, i: usize, extra: &[&str]) -> Server {
    let id = format!("n{i}");
    let mut args = vec![
        "--cluster",
        url,
        "--cluster-prefix",
        PREFIX,
        "--node-id",
        &id,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Waits (up to `limit`) until `server`'s health says `status`; returns how long it took
/// and the health.
async fn wait_health(server: &Server, status: &str, limit: Duration) -> (Duration, Value) {
    let started = Instant::now();
    loop {
        let health = server.get("/api/health").await.json();
        if health["status"] == status {
            return (started.elapsed(), health);
        }
        assert!(
            started.elapsed() < limit,
            "health not {status} after {limit:?}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each topic's rev as Redis holds it: what every hub must end on.
fn final_revs(redis: &OwnRedis) -> HashMap<String, u64> {
    redis.query(&["HGETALL", &format!("{{{PREFIX}}}:rev")])
}

fn must_be_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (a tmpfs mount or a network namespace)"
    );
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// Redis killed and restarted
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_loses_no_acknowledged_write() {
    // Every write on disk before Redis answers: the setting the promise rests on. (A Redis
    // that comes back without its data is refused: cluster.rs shows it.)
    let mut redis = OwnRedis::start();
    let hubs: Vec<Server> = (0..3).map(|i| hub(&redis.url(), i, &[])).collect();
    let topics = ["chaos/a", "chaos/b", "chaos/c", "chaos/d"];
    let mut watchers = Vec::new();
    for (i, server) in hubs.iter().enumerate() {
        watchers.push(Watcher::start(i, server, "chaos/#").await);
    }
    let bases: Vec<String> = hubs.iter().map(Server::http).collect();
    let load = Load::start("k", &bases, 2, &topics);
    let all = [0, 1, 2];
    load.wait_acked(150, &all, Duration::ZERO, Duration::from_secs(60))
        .await;

    redis.kill();
    let killed = load.now();
    let mut to_degraded = Duration::ZERO;
    for server in &hubs {
        let (took, health) = wait_health(server, "degraded", Duration::from_secs(15)).await;
        to_degraded = to_degraded.max(took);
        let why = health["degraded"].as_str().unwrap_or_default();
        assert!(why.contains("the shared store"), "{health}");
    }
    // Down for two seconds (the scenario's timing, not a wait for something): every
    // writer meets the outage; reads go on meanwhile.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(load.now() - killed)).await;
    load.wait_refused(12, killed, Duration::from_secs(15)).await;
    let cached = hubs[1].get("/api/state/chaos/a").await;
    assert_eq!(
        cached.status, 200,
        "reads are served from memory: {}",
        cached.text
    );
    redis.launch();
    let back = load.now();
    let mut to_ok = Duration::ZERO;
    for server in &hubs {
        let (took, _) = wait_health(server, "ok", Duration::from_secs(15)).await;
        to_ok = to_ok.max(took);
    }
    load.wait_acked(150, &all, back, Duration::from_secs(60))
        .await;
    let sent = load.stop().await;

    // A write wholly inside the outage cannot have been stored, nor acknowledged.
    let inside: Vec<_> = sent
        .iter()
        .filter(|s| s.started > killed && s.finished < back)
        .collect();
    assert!(
        inside.iter().all(|s| s.answer == Answer::Refused),
        "{inside:?}"
    );
    let slowest_refusal = inside.iter().map(|s| s.took()).max().unwrap_or_default();
    let want = final_revs(&redis);
    assert_eq!(want.len(), topics.len(), "{want:?}");
    let watchers = watchers.into_iter().map(|w| (w, false)).collect();
    let outcome = check_all(watchers, &sent, &want, &hubs.iter().collect::<Vec<_>>()).await;
    eprintln!(
        "redis kill: {} writes acknowledged, {} refused ({} inside the outage of {}, the \
         slowest refusal {}), {} stored though refused; every hub degraded within {}, ok \
         within {} of the restart",
        outcome.acked,
        outcome.refused,
        inside.len(),
        secs(back - killed),
        secs(slowest_refusal),
        outcome.stored_though_refused,
        secs(to_degraded),
        secs(to_ok),
    );
}

// ---------------------------------------------------------------------------------------
// One hub cut off from Redis for 30 s
// ---------------------------------------------------------------------------------------

/// How long the network between one hub and Redis is cut.
const CUT: Duration = Duration::from_secs(30);
/// The longest a write may wait for its answer during the cut: Redis's command timeout
/// (5 s) and some slack; without a bound it would wait out the whole cut.
const ANSWER_BOUND: Duration = Duration::from_secs(8);

#[test]
fn a_hub_cut_off_from_redis_for_30_s_refuses_writes_in_bounded_time_and_catches_up() {
    must_be_root("the network cut");
    let netns = Netns::create("chaos").unwrap_or_else(|e| {
        panic!("the cut runs in a network namespace of the test's own, which failed: {e}")
    });
    if let Err(e) = netns.exec(&["iptables", "-S", "INPUT"]) {
        panic!("the cut uses iptables inside the namespace (apt-get install iptables): {e}");
    }
    // Everything (Redis, the hubs, the clients) runs from one thread inside the namespace:
    // the processes and sockets it makes are there, on its own loopback.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            netns.enter().expect("enter the namespace");
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(cut_off(&netns));
        });
    });
}

/// iptables rules in `netns` (deleted with it, or by [`restore`]).
fn drop_packets(netns: &Netns, rules: &[&[&str]]) {
    for rule in rules {
        let mut args = vec!["iptables", "-A", "INPUT", "-p", "tcp"];
        args.extend_from_slice(rule);
        args.extend_from_slice(&["-j", "DROP"]);
        netns.exec(&args).expect("an iptables rule");
    }
}

fn restore(netns: &Netns) {
    netns
        .exec(&["iptables", "-F", "INPUT"])
        .expect("flush the rules");
}

/// The port of hub n0's follow connection (the one waiting in `XREAD`): n0 alone reaches
/// Redis on 127.0.0.2, which Redis reports as the connection's local address.
async fn follower_port(redis: &OwnRedis) -> String {
    let started = Instant::now();
    loop {
        let clients: String = redis.query(&["CLIENT", "LIST"]);
        let port = clients.lines().find_map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .map(str::to_owned)
            };
            let ours = field("laddr=")?.starts_with("127.0.0.2:") && field("cmd=")? == "xread";
            ours.then(|| field("addr=")?.rsplit(':').next().map(str::to_owned))
                .flatten()
        });
        if let Some(port) = port {
            return port;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{clients}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cut_off(netns: &Netns) {
    let redis = OwnRedis::start_with(RedisSetup {
        bind: "127.0.0.1 127.0.0.2".into(),
        ..RedisSetup::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    // A short stream: what the other hubs write during the cut is trimmed before n0 is
    // back, so it must resync rather than read on.
    let config = dir.path().join("short-stream.toml");
    std::fs::write(&config, "[cluster]\nstream_len = 50\n").expect("write config");
    let config = config.to_string_lossy().to_string();
    let extra = ["--config", config.as_str()];
    let hubs = [
        hub(&redis.url_at("127.0.0.2"), 0, &extra),
        hub(&redis.url(), 1, &extra),
        hub(&redis.url(), 2, &extra),
    ];
    let topics = ["cut/a", "cut/b", "cut/c"];
    let mut watchers = Vec::new();
    for (i, server) in hubs.iter().enumerate() {
        watchers.push(Watcher::start(i, server, "cut/#").await);
    }
    let bases: Vec<String> = hubs.iter().map(Server::http).collect();
    let load = Load::start("c", &bases, 1, &topics);
    load.wait_acked(60, &[0, 1, 2], Duration::ZERO, Duration::from_secs(60))
        .await;

    // A partition does not take every connection at once: n0's follow connection goes
    // first, so writes n0 appends meanwhile wait for a read-back that cannot come; a
    // second later the rest goes.
    let port = redis.port().to_string();
    let follower = follower_port(&redis).await;
    let first = load.now();
    drop_packets(
        netns,
        &[
            &["-d", "127.0.0.2", "--dport", &port, "--sport", &follower],
            &["-s", "127.0.0.2", "--sport", &port, "--dport", &follower],
        ],
    );
    // The scenario's timing (the partition spreading), not a wait for something.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop_packets(
        netns,
        &[
            &["-d", "127.0.0.2", "--dport", &port],
            &["-s", "127.0.0.2", "--sport", &port],
        ],
    );
    let cut = load.now();
    let (to_degraded, health) = wait_health(&hubs[0], "degraded", CUT).await;
    let why = health["degraded"].as_str().unwrap_or_default().to_string();
    // Reads and new subscriptions are served from memory meanwhile.
    let read = hubs[0].get("/api/state/cut/a").await;
    assert_eq!(read.status, 200, "{}", read.text);
    let mut late = hubs[0].ws().await;
    let snapshots = late
        .request(json!({"type": "subscribe", "id": "s", "patterns": ["cut/#"]}))
        .await;
    assert_eq!(snapshots.len(), topics.len() + 1, "{snapshots:?}");
    drop(late);
    // The other hubs keep working; wait out the rest of the cut.
    load.wait_acked(20, &[1, 2], cut, CUT).await;
    let left = CUT.saturating_sub(load.now() - cut);
    tokio::time::sleep(left).await;
    assert_eq!(hubs[1].get("/api/health").await.json()["status"], "ok");
    restore(netns);
    let restored = load.now();
    let (to_ok, _) = wait_health(&hubs[0], "ok", Duration::from_secs(20)).await;
    load.wait_acked(20, &[0], restored, Duration::from_secs(30))
        .await;
    let sent = load.stop().await;

    let resyncs = hubs[0].metric("statecast_cluster_resyncs_total").await;
    assert!(
        resyncs >= 1.0,
        "n0 came back past a trimmed stream: a resync"
    );
    let during: Vec<_> = sent
        .iter()
        .filter(|s| s.hub == 0 && s.finished > first && s.started < restored)
        .collect();
    let slowest = during.iter().map(|s| s.took()).max().unwrap_or_default();
    assert!(
        slowest < ANSWER_BOUND,
        "a write to the cut-off hub waited {slowest:?}: {:?}",
        during.iter().max_by_key(|s| s.took())
    );
    let inside: Vec<_> = during.iter().filter(|s| s.started > cut).collect();
    assert!(
        inside.iter().all(|s| s.answer == Answer::Refused),
        "{inside:?}"
    );
    assert!(!inside.is_empty());
    let others_during = sent
        .iter()
        .filter(|s| s.hub != 0 && s.started > cut && s.finished < restored)
        .collect::<Vec<_>>();
    assert!(others_during.iter().all(|s| s.acked()), "{others_during:?}");

    let want = final_revs(&redis);
    // n0's subscriber may jump ahead with snapshots (its hub resynced); the others see
    // every rev.
    let watchers = watchers
        .into_iter()
        .map(|w| {
            let may_resync = w.hub == 0;
            (w, may_resync)
        })
        .collect();
    let outcome = check_all(watchers, &sent, &want, &hubs.iter().collect::<Vec<_>>()).await;
    eprintln!(
        "network cut: n0 degraded {} after the full cut ({} after its first connection \
         went; {why}), {} of its writes refused during the cut (slowest answer {}), {} \
         written by the other hubs meanwhile; ok {} after the restore, {resyncs} resync; \
         {} acknowledged in all, {} stored though refused",
        secs(to_degraded),
        secs(cut - first + to_degraded),
        during
            .iter()
            .filter(|s| s.answer == Answer::Refused)
            .count(),
        secs(slowest),
        others_during.len(),
        secs(to_ok),
        outcome.acked,
        outcome.stored_though_refused,
    );
}

// ---------------------------------------------------------------------------------------
// A disk filling
// ---------------------------------------------------------------------------------------

/// Mounts a tmpfs of `size` over `dir`, failing the test if it cannot.
fn tmpfs(dir: &Path, size: &str) -> Tmpfs {
    must_be_root("a full disk");
    Tmpfs::mount(dir, size).unwrap_or_else(|e| panic!("a tmpfs on {}: {e}", dir.display()))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_full_data_directory_changes_nothing_in_cluster_mode() {
    // In cluster mode the hub keeps nothing on its own disk: the data lives in Redis.
    let redis = OwnRedis::start();
    let mut writer = hub(&redis.url(), 0, &[]);
    let other = hub(&redis.url(), 1, &[]);
    let data_dir = writer.data_dir().to_owned();
    writer.kill9();
    let _disk = tmpfs(&data_dir, "1m");
    writer.restart();
    let watcher = Watcher::start(1, &other, "disk/#").await;
    let load = Load::start("d", &[writer.http()], 2, &["disk/a", "disk/b"]);
    load.wait_acked(30, &[0], Duration::ZERO, Duration::from_secs(30))
        .await;
    fill_disk(&data_dir.join("filler"));
    let full = load.now();
    load.wait_acked(60, &[0], full, Duration::from_secs(30))
        .await;
    let health = writer.get("/api/health").await.json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(
        names_in(&data_dir),
        ["filler"],
        "the hub wrote nothing there"
    );
    std::fs::remove_file(data_dir.join("filler")).expect("free the space");
    let sent = load.stop().await;
    assert!(sent.iter().all(|s| s.acked()), "every write taken");
    let want = final_revs(&redis);
    let outcome = check_all(vec![(watcher, false)], &sent, &want, &[&writer, &other]).await;
    eprintln!(
        "full data directory: {} writes acknowledged, {} of them with the disk full, none \
         refused",
        outcome.acked,
        sent.iter().filter(|s| s.started >= full).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_disk_refuses_writes_cleanly_and_the_writer_recovers_when_space_returns() {
    // Redis's own disk fills under the writer. With `appendfsync everysec` Redis refuses
    // writes (MISCONF) and goes on serving reads; with `always` it exits, which is the kill
    // case above.
    let disk_dir = tempfile::tempdir().expect("temp dir");
    let _disk = tmpfs(disk_dir.path(), "8m");
    let mut redis = OwnRedis::start_with(RedisSetup {
        appendfsync: "everysec",
        dir: Some(disk_dir.path().to_owned()),
        ..RedisSetup::default()
    });
    let writer = hub(&redis.url(), 0, &[]);
    let other = hub(&redis.url(), 1, &[]);
    let watcher = Watcher::start(1, &other, "full/#").await;
    let load = Load::start("f", &[writer.http()], 1, &["full/a", "full/b"]);
    load.wait_acked(20, &[0], Duration::ZERO, Duration::from_secs(30))
        .await;
    fill_disk(&disk_dir.path().join("filler"));
    let full = load.now();
    load.wait_refused(5, full, Duration::from_secs(15)).await;
    let (_, health) = wait_health(&writer, "degraded", Duration::from_secs(5)).await;
    let why = health["degraded"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("No space left on device"), "{health}");
    assert_eq!(
        other.get("/api/state/full/a").await.status,
        200,
        "reads are served"
    );
    // Stop writing: the hub must find out by itself that Redis takes writes again.
    let mut sent = load.stop().await;
    let first_refusal = sent
        .iter()
        .filter(|s| s.answer == Answer::Refused)
        .map(|s| s.finished)
        .min()
        .unwrap_or_default();
    // A refused write changed nothing: both hubs hold the revs Redis holds (the other hub
    // may still be reading the last acknowledged ones).
    let before = final_revs(&redis);
    for server in [&writer, &other] {
        let started = Instant::now();
        for (topic, rev) in &before {
            loop {
                let got = server.get(&format!("/api/state/{topic}")).await.json();
                if got["rev"] == *rev {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{got} vs rev {rev}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    std::fs::remove_file(disk_dir.path().join("filler")).expect("free the space");
    let (to_ok, _) = wait_health(&writer, "ok", Duration::from_secs(10)).await;
    let load = Load::start("g", &[writer.http()], 1, &["full/a", "full/b"]);
    load.wait_acked(10, &[0], Duration::ZERO, Duration::from_secs(30))
        .await;
    sent.extend(load.stop().await);
    let want = final_revs(&redis);
    // What was acknowledged while the disk was full survives Redis being killed now.
    redis.kill();
    redis.launch();
    assert_eq!(
        final_revs(&redis),
        want,
        "Redis kept every acknowledged write"
    );
    let outcome = check_all(vec![(watcher, false)], &sent, &want, &[&writer, &other]).await;
    assert_eq!(
        outcome.stored_though_refused, 0,
        "Redis stored nothing it refused"
    );
    eprintln!(
        "Redis out of disk: the first write refused {} after the disk filled, {} refused \
         in all, the writer degraded ({why}); ok {} after the space was freed, without a \
         write; {} acknowledged in all",
        secs(first_refusal.saturating_sub(full)),
        outcome.refused,
        secs(to_ok),
        outcome.acked,
    );
}
