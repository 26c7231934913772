//! `--demo`: simulated devices writing through the same `Hub` API as every source, so a
//! newcomer sees live changes at once; the output controller also takes commands (`switch`,
//! `reboot`) through a command route, as a configured device would, so the README's
//! `statecast command` lines work against `statecast serve --demo`.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use statecast_bridge::config::{HandlerRouteConfig, RouteConfig, RouteKind};
use statecast_bridge::{BridgeConfig, Command, CommandError, Handlers};
use statecast_core::{ErrorCode, Hub, Topic};
use tokio::sync::Mutex;

/// The output controller's topic, which is also its command target.
const BOARD: &str = "demo/railhub/esp32-01";
/// The handler its route names.
const BOARD_HANDLER: &str = "demo-output-controller";
const OUTPUTS: usize = 8;
/// The longest `reboot` delay the board takes.
const MAX_REBOOT_DELAY_S: u64 = 60;
/// How long the board is away while it reboots.
const REBOOT_TIME: Duration = Duration::from_secs(1);

/// The simulated devices, ready to start.
pub struct Demo {
    board: Board,
}

impl Demo {
    /// Adds the output controller's command route to `bridge`; the handler it names is in
    /// [`Demo::handlers`].
    pub fn new(hub: &Hub, bridge: &mut BridgeConfig) -> Result<Demo, String> {
        let topic = Topic::new(BOARD).map_err(|e| format!("demo: {e}"))?;
        bridge.route.push(RouteConfig {
            target: BOARD.to_string(),
            timeout_ms: 5_000,
            repoll: false,
            kind: RouteKind::Handler(HandlerRouteConfig {
                handler: BOARD_HANDLER.to_string(),
            }),
        });
        let board = Board {
            hub: hub.clone(),
            topic,
            state: Arc::new(Mutex::new(BoardState::booted(1))),
        };
        Ok(Demo { board })
    }

    /// The handler of the output controller's route.
    pub fn handlers(&self) -> Handlers {
        let board = self.board.clone();
        Handlers::new().add(BOARD_HANDLER, move |command| {
            let board = board.clone();
            async move { board.command(command).await }
        })
    }

    /// Starts the simulated devices on the current runtime.
    pub fn start(self, hub: &Hub) {
        tokio::spawn(self.board.run());
        for (name, battery) in [("SHURE001", 92.0), ("SHURE002", 67.0)] {
            tokio::spawn(microphone(hub.clone(), name, battery));
        }
    }
}

/// An ESP32 output controller: eight outputs that stay as commands set them, an uptime
/// counting and a Wi-Fi level drifting.
#[derive(Clone)]
struct Board {
    hub: Hub,
    topic: Topic,
    /// Held while a state is written, so a tick cannot write an older state over the one a
    /// command just wrote.
    state: Arc<Mutex<BoardState>>,
}

struct BoardState {
    outputs: [bool; OUTPUTS],
    /// Half seconds since the last boot.
    ticks: u64,
    boots: u64,
    rebooting: bool,
}

impl BoardState {
    fn booted(boots: u64) -> BoardState {
        BoardState {
            outputs: [false; OUTPUTS],
            ticks: 0,
            boots,
            rebooting: false,
        }
    }

    fn json(&self) -> Value {
        json!({
            "device": "esp32-01",
            "status": if self.rebooting { "rebooting" } else { "running" },
            "boots": self.boots,
            "uptime_s": self.ticks / 2,
            "outputs": self.outputs,
            "wifi_rssi": -55 - (self.ticks % 5) as i64,
        })
    }
}

impl Board {
    async fn run(self) {
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            interval.tick().await;
            let mut state = self.state.lock().await;
            if !state.rebooting {
                state.ticks += 1;
                self.write(&state).await;
            }
        }
    }

    async fn write(&self, state: &BoardState) {
        if let Err(e) = self.hub.set(&self.topic, state.json()).await {
            tracing::warn!("demo output controller: {e}");
        }
    }

    /// `switch {"output": 0-7, "on": bool}` or `reboot {"delay_s": N}`; the answer comes
    /// once the state holds the change.
    async fn command(self, command: Command) -> Result<Value, CommandError> {
        let bad = |message: String| CommandError::new(ErrorCode::BadRequest, message);
        let mut state = self.state.lock().await;
        if state.rebooting {
            return Err(CommandError::new(
                ErrorCode::Unavailable,
                "the board is rebooting",
            ));
        }
        match command.name.as_str() {
            "switch" => {
                let output = command.args.get("output").and_then(Value::as_u64);
                let on = command.args.get("on").and_then(Value::as_bool);
                let (Some(output), Some(on)) = (output, on) else {
                    return Err(bad(format!(
                        "switch takes {{\"output\": 0-{}, \"on\": true|false}}, not {}",
                        OUTPUTS - 1,
                        command.args
                    )));
                };
                let Some(slot) = state.outputs.get_mut(output as usize) else {
                    return Err(bad(format!("the board has outputs 0 to {}", OUTPUTS - 1)));
                };
                *slot = on;
                self.write(&state).await;
                Ok(json!({"output": output, "on": on}))
            }
            "reboot" => {
                let delay_s = match command.args.get("delay_s") {
                    None => 0,
                    Some(delay) => delay
                        .as_u64()
                        .filter(|s| *s <= MAX_REBOOT_DELAY_S)
                        .ok_or_else(|| {
                            bad(format!("delay_s is 0 to {MAX_REBOOT_DELAY_S} seconds"))
                        })?,
                };
                drop(state);
                tokio::spawn(self.reboot(Duration::from_secs(delay_s)));
                Ok(json!({"rebooting": true, "delay_s": delay_s}))
            }
            other => Err(bad(format!(
                "the demo board takes `switch` and `reboot`, not {other:?}"
            ))),
        }
    }

    /// After `delay`: away for [`REBOOT_TIME`], then back with its outputs off.
    async fn reboot(self, delay: Duration) {
        tokio::time::sleep(delay).await;
        {
            let mut state = self.state.lock().await;
            state.rebooting = true;
            self.write(&state).await;
        }
        tokio::time::sleep(REBOOT_TIME).await;
        let mut state = self.state.lock().await;
        *state = BoardState::booted(state.boots + 1);
        self.write(&state).await;
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
