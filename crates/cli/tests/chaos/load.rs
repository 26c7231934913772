//! The write load of a chaos test: writers over REST, each `PATCH`ing `{"last": TAG}` with a
//! tag of its own per write (so every write changes its topic, one rev each, and the rev
//! that carries a tag says which write made it), recording every answer and when it came.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How a write was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200, with the rev the write made.
    Acked(u64),
    /// 503 `unavailable`: refused, never acknowledged.
    Refused,
    /// Anything else (another status, no answer within [`WRITE_TIMEOUT`]): always a
    /// failure of the test.
    Failed(String),
}

/// One write a writer sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The index of the hub it went to.
    pub hub: usize,
    pub topic: String,
    pub tag: String,
    /// Since the load started.
    pub started: Duration,
    pub finished: Duration,
    pub answer: Answer,
}

impl Sent {
    pub fn took(&self) -> Duration {
        self.finished - self.started
    }

    pub fn acked(&self) -> bool {
        matches!(self.answer, Answer::Acked(_))
    }
}

/// Longer than any answer may take: a write that hangs shows as a slow answer (which the
/// tests bound much tighter), not as a lost one.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(40);

/// Writers running against some hubs until [`Load::stop`].
pub struct Load {
    start: Instant,
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `per_hub` writers on each hub of `hubs` (their HTTP base URLs), each writing the
    /// `topics` in turn, one write at a time, a few milliseconds apart (the load is paced
    /// so that the machine's two cores are not all the writers'). Tags start with `label`,
    /// unique per load of a test.
    pub fn start(label: &str, hubs: &[String], per_hub: usize, topics: &[&str]) -> Load {
        let load = Load {
            start: Instant::now(),
            sent: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        };
        let topics: Arc<Vec<String>> = Arc::new(topics.iter().map(|t| t.to_string()).collect());
        let mut tasks = Vec::new();
        for (hub, base) in hubs.iter().enumerate() {
            for writer in 0..per_hub {
                let (base, topics, label) = (base.clone(), Arc::clone(&topics), label.to_owned());
                let (sent, stop, start) =
                    (Arc::clone(&load.sent), Arc::clone(&load.stop), load.start);
                tasks.push(tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .timeout(WRITE_TIMEOUT)
                        .build()
                        .expect("reqwest client");
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let topic = &topics[(i + writer + hub) % topics.len()];
                        let tag = format!("{label}h{hub}w{writer}n{i}");
                        let started = start.elapsed();
                        let answer = write(&client, &base, topic, &tag).await;
                        let pause = match answer {
                            Answer::Acked(_) => Duration::from_millis(5),
                            _ => Duration::from_millis(50),
                        };
                        let record = Sent {
                            hub,
                            topic: topic.clone(),
                            tag,
                            started,
                            finished: start.elapsed(),
                            answer,
                        };
                        sent.lock().unwrap().push(record);
                        i += 1;
                        // Pacing, not synchronisation: a refused write is not retried at
                        // full speed.
                        tokio::time::sleep(pause).await;
                    }
                }));
            }
        }
        Load { tasks, ..load }
    }

    /// Since the load started (the clock of [`Sent::started`]).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits (up to `limit`) until `n` writes to the hubs `on` that started after `since`
    /// were acknowledged.
    pub async fn wait_acked(&self, n: usize, on: &[usize], since: Duration, limit: Duration) {
        let what = format!("writes to hubs {on:?} acknowledged");
        self.wait_for(n, &what, limit, |s| {
            s.acked() && s.started >= since && on.contains(&s.hub)
        })
        .await;
    }

    /// Waits (up to `limit`) until `n` writes that started after `since` were refused.
    pub async fn wait_refused(&self, n: usize, since: Duration, limit: Duration) {
        self.wait_for(n, "writes refused", limit, |s| {
            s.answer == Answer::Refused && s.started >= since
        })
        .await;
    }

    async fn wait_for(
        &self,
        n: usize,
        what: &str,
        limit: Duration,
        counts: impl Fn(&Sent) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let count = self
                .sent
                .lock()
                .unwrap()
                .iter()
                .filter(|s| counts(s))
                .count();
            if count >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {count} of {n} {what} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writers (each finishes the write it is in) and returns every write.
    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(WRITE_TIMEOUT + Duration::from_secs(5), task)
                .await
                .expect("a writer to finish its last write")
                .expect("a writer task");
        }
        let sent = self.sent.lock().unwrap().clone();
        for s in &sent {
            assert!(
                !matches!(s.answer, Answer::Failed(_)),
                "a write was neither acknowledged nor refused: {s:?}"
            );
        }
        sent
    }
}

async fn write(client: &reqwest::Client, base: &str, topic: &str, tag: &str) -> Answer {
    let sent = client
        .patch(format!("{base}/api/state/{topic}"))
        .json(&json!({"last": tag}))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Answer::Failed(format!("no answer: {e}")),
    };
    let status = response.status().as_u16();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(e) => return Answer::Failed(format!("{status} with a body that is not JSON: {e}")),
    };
    match (status, body["rev"].as_u64()) {
        (200, Some(rev)) => Answer::Acked(rev),
        (503, _) if body["error"]["code"] == "unavailable" => Answer::Refused,
        _ => Answer::Failed(format!("{status} {body}")),
    }
}
