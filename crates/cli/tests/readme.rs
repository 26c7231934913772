//! The README as a newcomer follows it: the Rust it asks for is what the lock file needs,
//! and it installs the locked dependencies.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md")
}

/// The highest `rust-version` of the packages Cargo.lock holds, and the workspace's own.
fn rust_versions() -> (String, String) {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "{output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let members = metadata["workspace_members"].as_array().expect("members");
    let parse = |version: &str| -> Vec<u64> {
        version.split('.').map(|n| n.parse().unwrap_or(0)).collect()
    };
    let mut needed = String::new();
    let mut own = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let Some(version) = package["rust_version"].as_str() else {
            continue;
        };
        if members.contains(&package["id"]) {
            own.push(version.to_string());
        } else if parse(version) > parse(&needed) {
            needed = version.to_string();
        }
    }
    own.dedup();
    assert_eq!(
        own.len(),
        1,
        "every member inherits the workspace's: {own:?}"
    );
    let needed = needed.trim_end_matches(".0").to_string();
    (needed, own.remove(0))
}

#[test]
fn the_rust_it_asks_for_is_what_the_lock_file_needs() {
    let (needed, own) = rust_versions();
    assert_eq!(
        own.trim_end_matches(".0"),
        needed,
        "rust-version in Cargo.toml"
    );
    let packages: usize = std::fs::read_dir(repo_root().join("crates"))
        .expect("crates/")
        .count()
        + 1; // bench
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let declared = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["rust_version"].is_string())
        .count();
    assert_eq!(declared, packages, "every member says its rust-version");
    assert!(
        readme().contains(&format!("You need Rust {needed} or newer")),
        "the README asks for Rust {needed}"
    );
}

#[test]
fn every_install_builds_the_locked_dependencies() {
    for file in ["README.md", "examples/README.md"] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect("read");
        let installs: Vec<&str> = text
            .match_indices("cargo install")
            .map(|(at, _)| &text[at..text[at..].find('`').map_or(text.len(), |end| at + end)])
            .collect();
        assert!(!installs.is_empty() || file != "README.md", "{file}");
        for install in installs {
            assert!(install.contains("--locked"), "{file}: {install}");
        }
    }
}
