//! packaging/Dockerfile, checked without a container engine (none runs on the project's
//! test machine): it parses, is multi-stage, runs as a user that is not root with a
//! volume and a health check, the paths it copies exist and the `STATECAST_*` settings
//! it names exist.

use statecast_testkit::repo_root;

/// The `STATECAST_*` variables docs/configuration.md lists (generated from the settings'
/// one definition, and checked against it by a test of its own).
fn documented_variables() -> Vec<String> {
    let docs = std::fs::read_to_string(repo_root().join("docs/configuration.md")).expect("read");
    docs.split('`')
        .filter(|w| {
            w.starts_with("STATECAST_") && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dockerfile_copies_paths_that_exist_and_names_settings_that_exist() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("packaging/Dockerfile")).expect("read");
    let variables = documented_variables();
    assert!(
        variables.contains(&"STATECAST_LISTEN".to_string()),
        "{variables:?}"
    );
    // Continuation lines joined: one instruction per line.
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (word, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (word.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect();
    let known = [
        "FROM",
        "ARG",
        "RUN",
        "COPY",
        "ENV",
        "WORKDIR",
        "USER",
        "VOLUME",
        "EXPOSE",
        "HEALTHCHECK",
        "ENTRYPOINT",
        "CMD",
        "LABEL",
        "STOPSIGNAL",
    ];
    let mut copied = 0;
    let mut stages = 0;
    let mut settings = Vec::new();
    for (word, rest) in &instructions {
        assert!(
            known.contains(&word.as_str()),
            "unknown instruction {word} {rest}"
        );
        match word.as_str() {
            "FROM" => stages += 1,
            "COPY" if !rest.starts_with("--from") => {
                let parts: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|p| !p.starts_with("--"))
                    .collect();
                assert!(
                    parts.len() >= 2,
                    "COPY needs a source and a destination: {rest}"
                );
                for source in &parts[..parts.len() - 1] {
                    assert!(root.join(source).exists(), "COPY {source}: no such path");
                    copied += 1;
                }
            }
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let name = pair.split('=').next().unwrap_or(pair);
                    if name.starts_with("STATECAST_") {
                        settings.push(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    assert!(stages >= 2, "a multi-stage build: {stages} FROM");
    assert!(copied > 0, "the build copies the sources");
    assert!(
        !settings.is_empty(),
        "the image sets its STATECAST_* settings"
    );
    for name in &settings {
        assert!(variables.contains(name), "ENV {name}: no such setting");
    }
    // Every STATECAST_* the Dockerfile's comments mention exists too.
    for word in dockerfile.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("STATECAST_") && !word.ends_with('_') {
            assert!(
                variables.iter().any(|v| v == word),
                "{word}: no such setting"
            );
        }
    }
    let has = |w: &str| instructions.iter().any(|(word, _)| word == w);
    assert!(has("USER") && has("VOLUME") && has("HEALTHCHECK"));
    let user = instructions
        .iter()
        .rev()
        .find(|(w, _)| w == "USER")
        .map(|(_, r)| r.as_str());
    assert_ne!(user, Some("root"), "the image runs as root");
    assert_ne!(user, Some("0"), "the image runs as root");
}
