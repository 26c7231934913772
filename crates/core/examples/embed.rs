//! Embedding the hub: an application writes state and consumes changes in-process, with
//! the same messages a WebSocket client would get.

use serde_json::json;
use statecast_core::{Hub, HubConfig, MemoryEngine, Pattern, Since, Topic};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = Hub::open(MemoryEngine, HubConfig::default())?;
    let client = hub.connect();
    client.subscribe(&[Pattern::new("micboard/#")?], &Since::Now, None);

    let mic = Topic::new("micboard/SHURE001")?;
    hub.set(&mic, json!({"battery": 80, "rf_dbm": -61})).await?;
    hub.patch(&mic, json!({"battery": 79})).await?;
    hub.event(&mic, json!({"button": "mute"})).await?;

    client.ready().await;
    let mut frames = Vec::new();
    client.drain(&mut frames, 64);
    for frame in &frames {
        println!("{}", String::from_utf8_lossy(&frame.bytes));
    }
    Ok(())
}
