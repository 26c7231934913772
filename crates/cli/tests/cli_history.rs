//! `statecast history` run as a user runs it, against the real hub: the changes of a topic
//! as a table, CSV and the hub's JSON (every page of a long history), projected fields, a
//! numeric field per step, the state at a time, and its errors.

mod common;

use std::process::{Command, Output};

use common::{Server, Start};
use serde_json::{Value, json};

fn statecast(server_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(args)
        .env("STATECAST_URL", server_url)
        .env_remove("STATECAST_TOKEN")
        .output()
        .expect("run statecast")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// `--json`'s lines: one answer of the hub each.
fn answers(output: &Output) -> Vec<Value> {
    stdout_of(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

/// The changes in every answer of `statecast history TOPIC --json ARGS`.
fn history_of(url: &str, topic: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["history", topic, "--json"];
    all.extend_from_slice(args);
    answers(&statecast(url, &all))
        .iter()
        .flat_map(|a| a["changes"].as_array().expect("changes").clone())
        .collect()
}

/// A table's cells: its columns are two or more spaces apart (a cell may hold one).
fn cells(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

/// Every cell of a table starts where its column's header does.
fn assert_aligned(table: &str) {
    let header = table.lines().next().expect("a header");
    let starts = |line: &str| -> Vec<usize> {
        let mut at = Vec::new();
        let mut offset = 0;
        for cell in line.split("  ") {
            if !cell.trim().is_empty() {
                at.push(offset + (cell.len() - cell.trim_start().len()));
            }
            offset += cell.len() + 2;
        }
        at
    };
    let columns = starts(header);
    for line in table.lines().skip(1) {
        let at = starts(line);
        assert_eq!(
            at[..],
            columns[..at.len()],
            "misaligned: {line:?} under {header:?}"
        );
    }
}

fn stderr_of_failure(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1, stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Unix ms of an RFC 3339 time the hub sent.
fn ms(time: &Value) -> u64 {
    let time = time.as_str().expect("a time");
    let at = humantime::parse_rfc3339(time).expect("RFC 3339");
    at.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

async fn write(server: &Server, topic: &str, states: &[Value]) {
    for state in states {
        let path = format!("/api/state/{topic}");
        let answer = match state {
            Value::Null => server.delete(&path).await,
            state => server.put(&path, state).await,
        };
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changes_print_as_a_table_csv_and_the_hubs_json() {
    let server = Server::start(&[]);
    let url = server.http();
    let topic = "hist/mic";
    let states = [
        json!({"battery": 80, "rf": -60, "name": "SHURE 001"}),
        json!({"battery": 79, "rf": -60, "name": "SHURE 001"}),
        Value::Null, // a removal
        json!({"battery": 90}),
    ];
    write(&server, topic, &states).await;

    let json = answers(&statecast(&url, &["history", topic, "--json"]));
    assert_eq!(json.len(), 1, "one page: {json:?}");
    assert_eq!(json[0]["topic"], topic);
    assert!(json[0].get("next").is_none(), "{}", json[0]);
    let changes = json[0]["changes"].as_array().expect("changes").clone();
    let times: Vec<&str> = changes
        .iter()
        .map(|c| c["time"].as_str().expect("time"))
        .collect();
    for (i, change) in changes.iter().enumerate() {
        assert_eq!(change["rev"], i as u64 + 1, "{change}");
        assert_eq!(times[i].len(), 24, "RFC 3339 with ms: {}", times[i]);
        match &states[i] {
            Value::Null => assert_eq!(change["removed"], true, "{change}"),
            state => assert_eq!(&change["state"], state, "{change}"),
        }
    }

    let table = stdout_of(&statecast(&url, &["history", topic]));
    assert_eq!(
        cells(&table),
        [
            vec!["TIME", "REV", "STATE"],
            vec![
                times[0],
                "1",
                r#"{"battery":80,"name":"SHURE 001","rf":-60}"#
            ],
            vec![
                times[1],
                "2",
                r#"{"battery":79,"name":"SHURE 001","rf":-60}"#
            ],
            vec![times[2], "3", "(removed)"],
            vec![times[3], "4", r#"{"battery":90}"#],
        ]
    );
    assert_aligned(&table);

    let csv = stdout_of(&statecast(&url, &["history", topic, "--csv"]));
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "time,rev,removed,state".to_string(),
            format!(
                r#"{},1,false,"{{""battery"":80,""name"":""SHURE 001"",""rf"":-60}}""#,
                times[0]
            ),
            format!(
                r#"{},2,false,"{{""battery"":79,""name"":""SHURE 001"",""rf"":-60}}""#,
                times[1]
            ),
            format!("{},3,true,", times[2]),
            format!(r#"{},4,false,"{{""battery"":90}}""#, times[3]),
        ]
    );

    // Only some fields: a column each; a missing one is `-` (empty in CSV).
    let fields = ["history", topic, "--fields", "/battery,/name"];
    let table = stdout_of(&statecast(&url, &fields));
    assert_eq!(
        cells(&table),
        [
            vec!["TIME", "REV", "/battery", "/name"],
            vec![times[0], "1", "80", "SHURE 001"],
            vec![times[1], "2", "79", "SHURE 001"],
            vec![times[2], "3", "(removed)"],
            vec![times[3], "4", "90", "-"],
        ]
    );
    assert_aligned(&table);
    let csv = stdout_of(&statecast(&url, &[&fields[..], &["--csv"]].concat()));
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "time,rev,removed,/battery,/name".to_string(),
            format!("{},1,false,80,SHURE 001", times[0]),
            format!("{},2,false,79,SHURE 001", times[1]),
            format!("{},3,true,,", times[2]),
            format!("{},4,false,90,", times[3]),
        ]
    );
    let projected = history_of(&url, topic, &["--fields", "/battery,/rf"]);
    assert_eq!(projected[0]["state"], json!({"/battery": 80, "/rf": -60}));
    assert_eq!(projected[3]["state"], json!({"/battery": 90}));

    // Times as a duration before now, as RFC 3339 and as Unix ms; `--from` is inclusive.
    assert_eq!(history_of(&url, topic, &["--from", "-1h"]).len(), 4);
    let from_third: Vec<Value> = changes
        .iter()
        .filter(|c| ms(&c["time"]) >= ms(&changes[2]["time"]))
        .cloned()
        .collect();
    assert_eq!(history_of(&url, topic, &["--from", times[2]]), from_third);
    let third_ms = ms(&changes[2]["time"]).to_string();
    assert_eq!(history_of(&url, topic, &["--from", &third_ms]), from_third);
    let until = history_of(&url, topic, &["--to", &third_ms]);
    assert!(
        until
            .iter()
            .all(|c| ms(&c["time"]) <= ms(&changes[2]["time"])),
        "{until:?}"
    );

    // No changes in that time: nothing on stdout, a word on stderr.
    let after = (ms(&changes[3]["time"]) + 1).to_string();
    let none = statecast(&url, &["history", topic, "--from", &after]);
    assert_eq!(stdout_of(&none), "");
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no changes of hist/mic"),
        "{none:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_is_read_page_after_page_and_limit_cuts_it() {
    let server = Server::start(&[]);
    let url = server.http();
    let topic = "hist/many";
    let n = 1005; // more than the hub's default page of 1000
    let states: Vec<Value> = (1..=n).map(|i| json!({"n": i})).collect();
    write(&server, topic, &states).await;

    let pages = answers(&statecast(&url, &["history", topic, "--json"]));
    assert!(pages.len() >= 2, "{} pages", pages.len());
    let revs: Vec<u64> = pages
        .iter()
        .flat_map(|p| p["changes"].as_array().expect("changes").clone())
        .map(|c| c["rev"].as_u64().expect("rev"))
        .collect();
    assert_eq!(revs, (1..=n).collect::<Vec<u64>>());
    assert!(pages.last().expect("a page").get("next").is_none());

    let csv = stdout_of(&statecast(&url, &["history", topic, "--csv"]));
    assert_eq!(csv.lines().count(), n as usize + 1);
    let table = stdout_of(&statecast(&url, &["history", topic, "--limit", "3"]));
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[2].ends_with(r#"{"n":3}"#), "{table}");
    let limited = history_of(&url, topic, &["--limit", "1002"]);
    assert_eq!(limited.len(), 1002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_per_step_prints_its_min_max_avg_last_and_writes() {
    let server = Server::start(&[]);
    let url = server.http();
    let topic = "hist/series";
    let states: Vec<Value> = [80, 70, 90]
        .iter()
        .map(|b| json!({"battery": b, "name": "x"}))
        .collect();
    write(&server, topic, &states).await;
    let changes = history_of(&url, topic, &[]);
    let from = ms(&changes[0]["time"]).to_string();
    let to = (ms(&changes[2]["time"]) + 1).to_string();
    let range = ["--from", &from, "--to", &to];
    let series = |format: &[&str]| {
        let args = [
            &["history", topic, "--field", "/battery", "--step", "1h"][..],
            &range,
            format,
        ]
        .concat();
        statecast(&url, &args)
    };

    let json = answers(&series(&["--json"]));
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["field"], "/battery");
    assert_eq!(json[0]["step_ms"], 3_600_000);
    let points = json[0]["points"].as_array().expect("points").clone();
    assert!(!points.is_empty(), "{}", json[0]);
    let sum: u64 = points
        .iter()
        .map(|p| p["changes"].as_u64().expect("n"))
        .sum();
    assert_eq!(sum, 3);
    let mins = points.iter().filter_map(|p| p["min"].as_f64());
    assert_eq!(mins.fold(f64::INFINITY, f64::min), 70.0);
    let maxs = points.iter().filter_map(|p| p["max"].as_f64());
    assert_eq!(maxs.fold(f64::NEG_INFINITY, f64::max), 90.0);
    assert_eq!(points.last().expect("a point")["last"], 90);

    let rfc3339 = |p: &Value| {
        let t = p["t"].as_u64().expect("t");
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(t),
        )
        .to_string()
    };
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        v => v.to_string(),
    };
    let csv = stdout_of(&series(&["--csv"]));
    let mut expected = vec!["t,min,max,avg,last,changes".to_string()];
    for p in &points {
        expected.push(format!(
            "{},{},{},{},{},{}",
            rfc3339(p),
            cell(&p["min"]),
            cell(&p["max"]),
            cell(&p["avg"]),
            cell(&p["last"]),
            p["changes"]
        ));
    }
    assert_eq!(csv.lines().collect::<Vec<_>>(), expected);

    let table = stdout_of(&series(&[]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["T", "MIN", "MAX", "AVG", "LAST", "CHANGES"]
    );
    assert_eq!(lines.len(), points.len() + 1, "{table}");
    let last_row: Vec<&str> = lines.last().expect("a row").split_whitespace().collect();
    assert_eq!(last_row[0], rfc3339(points.last().expect("a point")));
    assert_eq!(last_row[4], "90", "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_prints_the_state_as_it_was() {
    let server = Server::start(&[]);
    let url = server.http();
    let topic = "hist/at";
    let states = [
        json!({"v": 1}),
        json!({"v": 2}),
        Value::Null,
        json!({"v": 4}),
    ];
    write(&server, topic, &states).await;
    let changes = history_of(&url, topic, &[]);
    for change in &changes {
        // The state at a change's time is that of the last change at or before it.
        let last = changes
            .iter()
            .rfind(|c| ms(&c["time"]) <= ms(&change["time"]))
            .expect("the change itself");
        let time = change["time"].as_str().expect("time");
        let output = statecast(&url, &["history", topic, "--at", time, "--json"]);
        if last["removed"] == true {
            let refused = stderr_of_failure(&output);
            assert!(refused.contains("not_found (404)"), "{refused}");
            continue;
        }
        let then = answers(&output).remove(0);
        assert_eq!(
            then,
            json!({"topic": topic, "rev": last["rev"], "time": last["time"], "state": last["state"]})
        );
        let csv = stdout_of(&statecast(&url, &["history", topic, "--at", time, "--csv"]));
        assert_eq!(
            csv.lines().collect::<Vec<_>>(),
            [
                "time,rev,state".to_string(),
                format!(
                    "{},{},\"{}\"",
                    last["time"].as_str().expect("time"),
                    last["rev"],
                    last["state"].to_string().replace('"', "\"\"")
                ),
            ]
        );
    }
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let table = stdout_of(&statecast(&url, &["history", topic, "--at", &now]));
    let last = &changes[3];
    assert_eq!(
        cells(&table),
        [
            vec!["TIME", "REV", "STATE"],
            vec![last["time"].as_str().expect("time"), "4", r#"{"v":4}"#]
        ]
    );

    let before = (ms(&changes[0]["time"]) - 1).to_string();
    let refused = stderr_of_failure(&statecast(&url, &["history", topic, "--at", &before]));
    assert!(
        refused.contains("the hub refused: not_found (404)"),
        "{refused}"
    );
    let gone = stderr_of_failure(&statecast(&url, &["history", topic, "--at", "-7d"]));
    assert!(gone.contains("the hub refused: gone (410)"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_readably() {
    let server = Server::start(&[]);
    let url = server.http();
    write(&server, "hist/bad", &[json!({"battery": 1})]).await;
    for args in [
        &["history", "hist/bad", "--from", "yesterday"][..],
        &["history", "hist/bad", "--fields", "battery"],
        &[
            "history", "hist/bad", "--field", "/battery", "--step", "often",
        ],
        &["history", "hist/bad", "--at", "then"],
    ] {
        let refused = stderr_of_failure(&statecast(&url, args));
        assert!(
            refused.contains("the hub refused: bad_request (400)"),
            "{args:?}: {refused}"
        );
    }
    // What the command line itself refuses (exit 2, clap's usage errors).
    for args in [
        &["history", "hist/bad", "--field", "/battery"][..],
        &["history", "hist/bad", "--step", "1m"],
        &["history", "hist/bad", "--json", "--csv"],
        &["history", "hist/bad", "--at", "-1h", "--from", "-2h"],
        &[
            "history", "hist/bad", "--fields", "/a", "--field", "/b", "--step", "1m",
        ],
        &["history", "hist/bad", "--limit", "0"],
    ] {
        let output = statecast(&url, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_and_a_topic_it_may_not_read_is_forbidden() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        "[[auth.keys]]\nname = \"cli-history\"\nkey = \"s3cret\"\nread = [\"a/#\"]\nwrite = [\"a/#\", \"b/#\"]\n",
    )
    .expect("write config");
    let server = Server::start(&["--config", config.to_str().expect("UTF-8 path")]);
    let url = server.http();
    for topic in ["a/seen", "b/hidden"] {
        let output = statecast(&url, &["set", topic, "{\"x\":1}", "--token", "s3cret"]);
        stdout_of(&output);
    }
    let seen = answers(&statecast(
        &url,
        &["history", "a/seen", "--json", "--token", "s3cret"],
    ));
    assert_eq!(seen[0]["changes"][0]["state"], json!({"x": 1}));
    let forbidden = stderr_of_failure(&statecast(
        &url,
        &["history", "b/hidden", "--token", "s3cret"],
    ));
    assert!(forbidden.contains("forbidden (403)"), "{forbidden}");
    let anonymous = stderr_of_failure(&statecast(&url, &["history", "a/seen"]));
    assert!(anonymous.contains("unauthorized (401)"), "{anonymous}");
}
