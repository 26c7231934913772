//! A real Home Assistant for the `homeassistant` source's tests: release 2024.1.6 from the
//! venv `tests/homeassistant/setup.sh` installs (`target/homeassistant-venv`, or
//! `$STATECAST_HA_VENV`). Each [`HomeAssistant`] is a `hass` process of its own, with its
//! own configuration directory (a temp dir) and a free loopback port, a test user made by
//! `hass --script auth` and an access token from the login flow. It is stopped by its PID.
//!
//! The configuration is minimal (`http`, `api`, `websocket_api`, `auth` and the entities a
//! test asks for; no `default_config`, no onboarding), so Home Assistant starts in about a
//! second. The bridge's tests drive the source with it, the CLI's the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::local::{free_port, repo_root, signal};

/// The release the tests run against (and `setup.sh` installs).
pub const VERSION: &str = "2024.1.6";
/// How long Home Assistant may take to start listening: a start right after the install,
/// with nothing in the disk cache, takes over ten seconds; later ones about one.
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long it may take to stop, or to answer a request.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);
const USER: &str = "statecast";
const PASSWORD: &str = "statecast-test-password";
/// The OAuth client id of the login flow: Home Assistant takes any URL.
const CLIENT_ID: &str = "http://127.0.0.1/";

/// The `hass` program, after checking that the right release is installed; panics saying
/// how to install it otherwise.
fn hass() -> &'static Path {
    static HASS: OnceLock<PathBuf> = OnceLock::new();
    HASS.get_or_init(|| {
        let venv = match std::env::var_os("STATECAST_HA_VENV") {
            Some(dir) => repo_root().join(dir),
            None => repo_root().join("target/homeassistant-venv"),
        };
        let hass = venv.join("bin/hass");
        let install = "run tests/homeassistant/setup.sh from the repository root to install \
                       it (a few minutes; .ci/run does it)";
        let version = Command::new(&hass)
            .arg("--version")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        match version {
            Some(v) if v == VERSION => hass,
            Some(v) => panic!(
                "{} is Home Assistant {v}; these tests need {VERSION}: {install}",
                hass.display()
            ),
            None => panic!(
                "Home Assistant {VERSION} is not installed at {}: {install}",
                hass.display()
            ),
        }
    })
}

/// A running (or stopped, between [`HomeAssistant::stop`] and
/// [`HomeAssistant::start_again`]) Home Assistant.
pub struct HomeAssistant {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    token: String,
    http: reqwest::Client,
}

impl HomeAssistant {
    /// Starts Home Assistant with `entities`, YAML for `configuration.yaml` (an
    /// `input_boolean:` block, say), and logs the test user in.
    pub async fn start(entities: &str) -> HomeAssistant {
        let hass = hass();
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut ha = HomeAssistant {
            dir,
            port: free_port(),
            child: None,
            token: String::new(),
            http: reqwest::Client::builder()
                .timeout(ANSWER_LIMIT)
                .build()
                .expect("an HTTP client"),
        };
        ha.configure(entities);
        let config = ha.dir.path().to_path_buf();
        let added = tokio::task::spawn_blocking(move || {
            Command::new(hass)
                .args(["--script", "auth", "-c"])
                .arg(&config)
                .args(["add", USER, PASSWORD])
                .output()
        })
        .await
        .expect("join")
        .expect("run hass --script auth");
        assert!(
            added.status.success(),
            "hass --script auth add failed: {}{}",
            String::from_utf8_lossy(&added.stdout),
            String::from_utf8_lossy(&added.stderr)
        );
        ha.launch().await;
        ha.token = ha.log_in().await;
        ha
    }

    /// Writes `configuration.yaml` with `entities` (takes effect at the next start, or
    /// with a reload service such as `input_boolean.reload`).
    pub fn configure(&self, entities: &str) {
        let yaml = format!(
            "homeassistant:\n  name: statecast test\n  latitude: 52.37\n  longitude: 4.89\n  \
             elevation: 0\n  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  \
             country: NL\nhttp:\n  server_host: 127.0.0.1\n  server_port: {}\napi:\n\
             websocket_api:\nauth:\n{entities}\n",
            self.port
        );
        std::fs::write(self.dir.path().join("configuration.yaml"), yaml)
            .expect("write configuration.yaml");
    }

    /// Starts `hass` and waits until its HTTP server answers.
    async fn launch(&mut self) {
        assert!(self.child.is_none(), "Home Assistant is running already");
        let out = std::fs::File::create(self.dir.path().join("hass.out")).expect("hass.out");
        let child = Command::new(hass())
            .arg("--skip-pip")
            .arg("-c")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("hass.out"))
            .stderr(out)
            .spawn()
            .expect("start hass");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!("hass exited ({status}) while starting:\n{}", self.log());
            }
            // Any answer will do (401 without a token): the server is up, and Home
            // Assistant starts it once every configured integration is set up.
            if self.http.get(self.http_url("/api/")).send().await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Home Assistant did not listen on port {} within {START_LIMIT:?}:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The login flow: username and password, then the code for an access token.
    async fn log_in(&self) -> String {
        let flow = self
            .post_json(
                "/auth/login_flow",
                &json!({"client_id": CLIENT_ID, "handler": ["homeassistant", null],
                        "redirect_uri": CLIENT_ID}),
            )
            .await;
        let flow_id = flow["flow_id"].as_str().expect("a login flow id");
        let done = self
            .post_json(
                &format!("/auth/login_flow/{flow_id}"),
                &json!({"client_id": CLIENT_ID, "username": USER, "password": PASSWORD}),
            )
            .await;
        let code = done["result"]
            .as_str()
            .unwrap_or_else(|| panic!("the login flow did not end with a code: {done}"));
        let body = format!(
            "grant_type=authorization_code&code={code}&client_id={}",
            CLIENT_ID.replace(':', "%3A").replace('/', "%2F")
        );
        let response = self
            .http
            .post(self.http_url("/auth/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST /auth/token");
        let token: Value = response.json().await.expect("a token answer");
        token["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {token}"))
            .to_string()
    }

    async fn post_json(&self, path: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(self.http_url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("an answer");
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"))
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The WebSocket API's URL, as a source names it.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/api/websocket", self.port)
    }

    /// The test user's access token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Calls a service over Home Assistant's REST API, as another client would.
    pub async fn call(&self, domain: &str, service: &str, data: Value) {
        let response = self
            .http
            .post(self.http_url(&format!("/api/services/{domain}/{service}")))
            .bearer_auth(&self.token)
            .json(&data)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{domain}.{service}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{domain}.{service}: {status} {text}");
    }

    /// Sets a state over the REST API, as an integration that has no entity of its own
    /// would; Home Assistant forgets it at the next start.
    pub async fn set_state(&self, entity_id: &str, state: &str) {
        let response = self
            .http
            .post(self.http_url(&format!("/api/states/{entity_id}")))
            .bearer_auth(&self.token)
            .json(&json!({"state": state}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("set the state of {entity_id}: {e}"));
        let status = response.status();
        assert!(
            status.is_success(),
            "set the state of {entity_id}: {status}"
        );
    }

    /// An entity's state as Home Assistant's REST API has it (`None`: no such entity).
    pub async fn state(&self, entity_id: &str) -> Option<Value> {
        let response = self
            .http
            .get(self.http_url(&format!("/api/states/{entity_id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET state of {entity_id}: {e}"));
        if response.status() == 404 {
            return None;
        }
        Some(response.json().await.expect("a state"))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("Home Assistant is running").id()
    }

    /// Stops Home Assistant with SIGTERM (it saves its stores) and waits for it to exit.
    pub async fn stop(&mut self) {
        signal(self.pid(), "TERM");
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(ANSWER_LIMIT, waiting).await {
            Ok(status) => {
                let status = status.expect("join").expect("wait for hass");
                assert!(
                    status.success(),
                    "hass exited with {status}:\n{}",
                    self.log()
                );
            }
            Err(_) => {
                signal(pid, "KILL");
                panic!("hass did not stop within {ANSWER_LIMIT:?}:\n{}", self.log());
            }
        }
    }

    /// Starts Home Assistant again, on the same directory and port; the token stays valid.
    pub async fn start_again(&mut self) {
        self.launch().await;
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }

    /// What `hass` printed, and its log file.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "--- hass output ---\n{}\n--- home-assistant.log ---\n{}",
            read("hass.out").unwrap_or_default(),
            read("home-assistant.log").unwrap_or_default()
        )
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a frozen process too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
