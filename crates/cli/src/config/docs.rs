//! docs/configuration.md, generated from the definitions: every setting of `statecast
//! serve` from [`SETTINGS`], and the client subcommands' `--url` and `--token` from their
//! clap arguments, so the page cannot say what the code does not do. `statecast
//! config-docs` prints it; a test fails while the committed page differs.

use std::fmt::Write;

use clap::{Args, Command};

use super::setting::{Field, Setting};
use super::{SETTINGS, Settings};
use crate::client::HubUrl;

/// The page.
pub fn markdown() -> String {
    let mut page = String::from(INTRO);
    let mut defaults = Settings::default();
    page.push_str(
        "| Flag | Environment variable | File key | Default | Meaning |\n\
         |---|---|---|---|---|\n",
    );
    for setting in SETTINGS {
        row(&mut page, setting, &mut defaults);
    }
    page.push_str(CLIENT);
    page.push_str(
        "| Flag | Environment variable | Default | Meaning |\n\
         |---|---|---|---|\n",
    );
    for arg in HubUrl::augment_args(Command::new("client")).get_arguments() {
        let flag = arg.get_long().map_or_else(String::new, |long| {
            let value = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(String::new, |name| format!(" <{name}>"));
            format!("`--{long}{value}`")
        });
        let env = arg
            .get_env()
            .map_or_else(String::new, |env| code(&env.to_string_lossy()));
        let default = match arg.get_default_values() {
            [] => "unset".to_string(),
            values => code(&values[0].to_string_lossy()),
        };
        let meaning = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let _ = writeln!(page, "| {flag} | {env} | {default} | {} |", cell(&meaning));
    }
    page.push_str(LOG);
    page
}

/// One setting's row: flag, variable, file key, default, meaning.
fn row(page: &mut String, setting: &Setting, defaults: &mut Settings) {
    let flag = setting
        .long()
        .map_or_else(String::new, |long| match setting.value_name {
            "" => format!("`--{long}`"),
            value => format!("`--{long} <{value}>`"),
        });
    let env = setting.env().map_or_else(String::new, |env| code(&env));
    let key = match setting.key.map(|key| (key, key.split_once('.'))) {
        None => String::new(),
        Some((_, Some((table, name)))) => format!("`{name}` in `[{table}]`"),
        Some((key, None)) => code(key),
    };
    let default = match (&setting.field, setting.default(defaults)) {
        (_, Some(default)) if setting.default_text.is_some() => default,
        (_, Some(default)) => code(&default),
        (Field::Switch(_), None) => "off".to_string(),
        (Field::Value(_), None) => "unset".to_string(),
        (Field::Section(_), None) => "none".to_string(),
    };
    let _ = writeln!(
        page,
        "| {flag} | {env} | {key} | {default} | {} |",
        cell(setting.doc)
    );
}

/// `text` as inline code.
fn code(text: &str) -> String {
    format!("`{text}`")
}

/// `text` in a table cell: a `|` would end the cell, and a `<time>` would be taken for
/// an HTML tag.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('<', "&lt;")
}

const INTRO: &str = "\
# Configuration

<!-- Generated from crates/cli/src/config/defs.rs by `statecast config-docs`: do not edit.
     After changing a setting, run
     `cargo run -p statecast -- config-docs > docs/configuration.md`
     (a test fails while this page differs from what the definitions generate). -->

`statecast serve` takes each setting from the first of these that gives it: its flag, its
`STATECAST_*` environment variable, the TOML file named by `--config` (or
`STATECAST_CONFIG`), its default. A switch (`--demo`) is turned on by any of them
(`STATECAST_DEMO=true`, `demo = true`) and off by none. A key in the file that is not
below is refused, naming the keys there are. `statecast serve --help` shows the same
flags, variables and defaults.

A file key `x` in `[t]` is `x` inside the table `[t]`; a row without a flag is only in
the file, a row without a file key only a flag and a variable. The `[auth]`,
`[[source]]`, `[[route]]` and `[socketio]` tables are described where they are used:
[security.md](security.md), the README's *Devices* section and
crates/bridge/src/config.rs, [socketio.md](socketio.md).

`--listen` takes an address (`127.0.0.1:8080`, `[::1]:8080`) or a host name and port
(`localhost:8080`), resolved once at start; of several addresses the first IPv4 one is
listened on (`localhost:8080` listens on `127.0.0.1:8080` only, where the client
subcommands look by default), else the first.

## `statecast serve`

";

const CLIENT: &str = "
## The client subcommands

`watch`, `get`, `set`, `patch`, `delete`, `event` and `command` find the hub with these
(flag first, then the variable, then the default). `--url` takes the hub's HTTP URL
(`http://HOST:PORT`, `https://HOST:PORT`, with a path prefix if a proxy adds one), its
WebSocket URL (`ws://HOST:PORT/ws`, `wss://...`) or a bare `HOST:PORT` (meaning
`http://HOST:PORT`).

";

const LOG: &str = "
## Both

| Environment variable | Default | Meaning |
|---|---|---|
| `STATECAST_LOG` | `info` | What is logged to standard error: a level (`debug`) or a filter such as `info,statecast_bridge=debug` |
";

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the page is, from the repository root.
    const PATH: &str = "docs/configuration.md";

    #[test]
    fn the_committed_page_is_what_the_definitions_generate() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == markdown(),
            "{PATH} is not what the settings generate: run \
             `cargo run -p statecast -- config-docs > {PATH}`"
        );
    }

    #[test]
    fn the_page_has_a_row_for_every_setting() {
        let page = markdown();
        for setting in SETTINGS {
            let named = match (setting.env(), setting.key) {
                (Some(env), _) => format!("| `{env}` |"),
                (None, Some(key)) => key.rsplit('.').next().unwrap_or(key).to_string(),
                (None, None) => unreachable!("a setting comes from somewhere"),
            };
            assert!(page.contains(&named), "no row for {named}");
            assert!(page.contains(&cell(setting.doc)), "no doc for {named}");
        }
        assert!(
            page.contains("| `--url <URL>` | `STATECAST_URL` |"),
            "{page}"
        );
    }
}
