//! Benchmarks of the hub's hot paths.
//!
//! - `fanout/10000`: one patch published to 10,000 subscribed clients, including draining
//!   every client's queue (what the transports' writers do); `fanout/10000_publish_only`
//!   times only submit + wait (diff, group commit, fan-out into 10,000 queues), draining
//!   outside the timed section. Throughput is reported per delivery (one element = one
//!   message queued for one client), so time per delivery = 1 / throughput.
//! - `diff/*`: `merge::diff` on a ~40-member device state with 1 and 10 members changed.
//! - `apply/*`: `merge::apply` of those patches.
//! - `write/parse_diff_300b`: what a write of a typical ~300-byte device state costs before
//!   the hub's lock: parsing the body (as REST and WebSocket do) and diffing it against the
//!   current state; `write/serialize_300b` serializes the state and the patch, as `submit`
//!   and the `patch` message do. Both depend on how `serde_json` keeps numbers.
//!
//! Run: `cargo bench -p statecast-core --bench fanout -- --quick`

// The device state below is one large `json!` literal.
#![recursion_limit = "256"]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use statecast_core::merge::{self, Diff};
use statecast_core::{Client, Frame, Hub, HubConfig, MemoryEngine, Pattern, Since, Topic, Write};

const CLIENTS: usize = 10_000;

/// A realistic device state: ~40 top-level members, a nested outputs array, wifi, power
/// and wireless-mic (battery / RF) objects.
fn device_state() -> Value {
    let outputs: Vec<Value> = (0..8)
        .map(|i| json!({"id": i, "name": format!("Signal A{i}"), "on": i % 3 == 0, "pwm": i * 32, "fault": false}))
        .collect();
    json!({
        "id": "railhub-esp32-01",
        "name": "Railhub controller 1",
        "model": "esp32-wroom-32",
        "fw_version": "2.4.1",
        "fw_build": "2024-11-02T10:13:00Z",
        "uptime": 123_456,
        "boot_count": 17,
        "reset_reason": "power_on",
        "free_heap": 182_344,
        "min_free_heap": 150_112,
        "cpu_temp": 48.5,
        "wifi": {"ssid": "railroom", "rssi": -61, "channel": 6, "ip": "10.0.4.21", "mac": "24:6f:28:aa:bb:cc"},
        "mqtt_connected": true,
        "last_seen": "2024-11-23T14:55:00Z",
        "power": {"voltage": 12.1, "current": 0.82, "source": "psu"},
        "outputs": outputs,
        "inputs": [false, true, false, false],
        "mic": {
            "battery": 80,
            "battery_bars": 4,
            "battery_runtime_min": 312,
            "battery_type": "Li-Ion",
            "rf_a": -62,
            "rf_b": -65,
            "rf_quality": 94,
            "antenna": "A",
            "tx_type": "ULXD2",
            "tx_mute": false,
            "frequency_mhz": 572.125,
            "channel_name": "Lead Vox",
            "audio_level": -18,
            "peak": -6,
        },
        "location": "Layout room, shelf 2",
        "zone": "north",
        "mode": "auto",
        "scene": "evening",
        "brightness": 70,
        "volume": 35,
        "muted": false,
        "alarm": false,
        "error_count": 0,
        "last_error": "",
        "config_rev": 42,
        "ota_pending": false,
        "ntp_synced": true,
        "timezone": "Europe/Berlin",
        "log_level": "info",
        "sensor_temp": 21.4,
        "sensor_humidity": 48,
        "door_open": false,
        "motion": false,
        "led_color": "#ff8800",
        "tags": ["rail", "signals", "north"],
        "owner": "club",
        "heartbeat_ms": 5000,
        "track_power": true,
    })
}

/// The state with one member changed.
fn one_changed(old: &Value) -> Value {
    let mut new = old.clone();
    new["uptime"] = json!(123_457);
    new
}

/// The state with ten members changed, some nested, one inside the outputs array.
fn ten_changed(old: &Value) -> Value {
    let mut new = old.clone();
    new["uptime"] = json!(123_457);
    new["free_heap"] = json!(181_020);
    new["cpu_temp"] = json!(48.9);
    new["wifi"]["rssi"] = json!(-63);
    new["mic"]["battery"] = json!(79);
    new["mic"]["rf_a"] = json!(-58);
    new["mic"]["audio_level"] = json!(-12);
    new["outputs"][2]["on"] = json!(true);
    new["power"]["current"] = json!(0.91);
    new["sensor_temp"] = json!(21.5);
    new
}

/// A ~300-byte device state as a device sends it, numbers mostly; and the same with `uptime`
/// one more.
const STATE_300B: &str = r#"{"id":"railhub-esp32-01","uptime":123456,"free_heap":182344,"cpu_temp":48.5,"wifi":{"rssi":-61,"channel":6,"ip":"10.0.4.21"},"power":{"voltage":12.1,"current":0.82,"source":"psu"},"outputs":[0,1,0,0,1,0,0,0],"inputs":[false,true,false,false],"mode":"auto","brightness":70,"volume":35,"muted":false,"sensor_temp":21.4}"#;
const NEXT_300B: &str = r#"{"id":"railhub-esp32-01","uptime":123457,"free_heap":182344,"cpu_temp":48.5,"wifi":{"rssi":-61,"channel":6,"ip":"10.0.4.21"},"power":{"voltage":12.1,"current":0.82,"source":"psu"},"outputs":[0,1,0,0,1,0,0,0],"inputs":[false,true,false,false],"mode":"auto","brightness":70,"volume":35,"muted":false,"sensor_temp":21.4}"#;

fn patch_of(old: &Value, new: &Value) -> Value {
    match merge::diff(old, new) {
        Diff::Patch(p) => p,
        other => panic!("expected a patch, got {other:?}"),
    }
}

fn drain_all(clients: &[Client], frames: &mut Vec<Frame>) -> usize {
    let mut delivered = 0;
    for client in clients {
        frames.clear();
        client.drain(frames, 64);
        delivered += frames.len();
    }
    delivered
}

fn bench_fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let hub = Hub::open(MemoryEngine, HubConfig::default()).unwrap();
    let topic = Topic::new("railhub/esp32-01").unwrap();
    rt.block_on(hub.set(&topic, device_state())).unwrap();
    let pattern = [Pattern::new("railhub/#").unwrap()];
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let client = hub.connect();
            client.subscribe(&pattern, &Since::Now, None);
            client
        })
        .collect();
    let mut frames = Vec::with_capacity(64);
    assert_eq!(
        drain_all(&clients, &mut frames),
        CLIENTS,
        "one snapshot per client"
    );

    let mut uptime = 0u64;
    let publish = |uptime: u64| {
        let write = Write::Patch {
            topic: topic.clone(),
            patch: json!({"uptime": uptime}),
            if_rev: None,
        };
        let submitted = hub.submit(write).unwrap();
        let outcome = rt.block_on(submitted.wait()).unwrap();
        debug_assert!(outcome.changed);
    };

    // Sanity check outside the measurements: one change reaches every client once.
    uptime += 1;
    publish(uptime);
    assert_eq!(drain_all(&clients, &mut frames), CLIENTS);

    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(CLIENTS as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("10000", |b| {
        b.iter(|| {
            uptime += 1;
            publish(uptime);
            black_box(drain_all(&clients, &mut frames))
        })
    });
    group.bench_function("10000_publish_only", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                uptime += 1;
                let started = Instant::now();
                publish(uptime);
                timed += started.elapsed();
                black_box(drain_all(&clients, &mut frames));
            }
            timed
        })
    });
    group.finish();
    drop(clients);
    hub.shutdown();
}

fn bench_merge(c: &mut Criterion) {
    let old = device_state();
    let members = old.as_object().unwrap().len();
    assert!((38..=42).contains(&members), "{members} members");
    let new_1 = one_changed(&old);
    let new_10 = ten_changed(&old);
    let patch_1 = patch_of(&old, &new_1);
    let patch_10 = patch_of(&old, &new_10);
    assert_eq!(patch_1, json!({"uptime": 123_457}));
    assert_eq!(patch_10.as_object().unwrap().len(), 8, "{patch_10}"); // 10 changes under 8 top-level members
    for (patch, new) in [(&patch_1, &new_1), (&patch_10, &new_10)] {
        let mut state = old.clone();
        merge::apply(&mut state, patch);
        assert_eq!(&state, new);
    }

    let mut group = c.benchmark_group("diff");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("1_changed", |b| {
        b.iter(|| merge::diff(black_box(&old), black_box(&new_1)))
    });
    group.bench_function("10_changed", |b| {
        b.iter(|| merge::diff(black_box(&old), black_box(&new_10)))
    });
    group.bench_function("unchanged", |b| {
        let same = old.clone();
        b.iter(|| merge::diff(black_box(&old), black_box(&same)))
    });
    group.finish();

    let mut group = c.benchmark_group("apply");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    for (name, patch) in [("1_changed", &patch_1), ("10_changed", &patch_10)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || old.clone(),
                |mut state| {
                    merge::apply(&mut state, black_box(patch));
                    state
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn bench_write(c: &mut Criterion) {
    assert!(
        (280..=320).contains(&STATE_300B.len()),
        "{}",
        STATE_300B.len()
    );
    let old: Value = serde_json::from_str(STATE_300B).unwrap();
    let parse_diff = |text: &str| {
        let new: Value = serde_json::from_str(text).unwrap();
        let diff = merge::diff(&old, &new);
        (new, diff)
    };
    let (new, diff) = parse_diff(NEXT_300B);
    assert_eq!(diff, Diff::Patch(json!({"uptime": 123_457})));
    let patch = patch_of(&old, &new);

    let mut group = c.benchmark_group("write");
    group.throughput(Throughput::Bytes(NEXT_300B.len() as u64));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("parse_diff_300b", |b| {
        b.iter(|| parse_diff(black_box(NEXT_300B)))
    });
    group.bench_function("serialize_300b", |b| {
        b.iter(|| {
            let state = serde_json::to_vec(black_box(&new)).unwrap();
            let patch = serde_json::to_vec(black_box(&patch)).unwrap();
            (state, patch)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_fanout, bench_merge, bench_write);
criterion_main!(benches);
