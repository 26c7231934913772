//! `--demo`: simulated devices writing through the same `Hub` API as every source, so a
//! newcomer sees live changes at once.

use std::time::Duration;

use rand::Rng;
use serde_json::json;
use statecast_core::{Hub, Topic};

/// Starts the simulated devices on the current runtime.
pub fn start(hub: Hub) {
    tokio::spawn(output_controller(hub.clone()));
    for (name, battery) in [("SHURE001", 92.0), ("SHURE002", 67.0)] {
        tokio::spawn(microphone(hub.clone(), name, battery));
    }
}

/// An ESP32 output controller: eight outputs, one blinking, uptime counting.
async fn output_controller(hub: Hub) {
    let Ok(topic) = Topic::new("demo/railhub/esp32-01") else {
        return;
    };
    let mut outputs = [false; 8];
    let mut tick: u64 = 0;
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        interval.tick().await;
        tick += 1;
        outputs[(tick % 8) as usize] = !outputs[(tick % 8) as usize];
        let state = json!({
            "device": "esp32-01",
            "uptime_s": tick / 2,
            "outputs": outputs,
            "wifi_rssi": -55 - (tick % 5) as i64,
        });
        if let Err(e) = hub.set(&topic, state).await {
            tracing::warn!("demo output controller: {e}");
        }
    }
}

/// A wireless microphone whose battery drains and RF level drifts.
async fn microphone(hub: Hub, name: &'static str, mut battery: f64) {
    let Ok(topic) = Topic::new(&format!("demo/micboard/{name}")) else {
        return;
    };
    let mut rf: f64 = -60.0;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        let (drain, drift) = {
            let mut rng = rand::rng();
            (rng.random_range(0.0..0.4), rng.random_range(-3.0..3.0))
        };
        battery = (battery - drain).max(0.0);
        rf = (rf + drift).clamp(-95.0, -30.0);
        let state = json!({
            "name": name,
            "battery": battery.round() as i64,
            "rf_dbm": rf.round() as i64,
            "status": if battery > 20.0 { "ok" } else { "low battery" },
        });
        if let Err(e) = hub.set(&topic, state).await {
            tracing::warn!("demo microphone {name}: {e}");
        }
    }
}
