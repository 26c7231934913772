//! `statecast serve` settings: flags, then `STATECAST_*` environment variables, then the
//! TOML file (`--config`, keys named like the flags), then defaults.
//!
//! Each setting is defined once, in [`defs::SETTINGS`] (the model is ripgrep's
//! `flags/defs.rs`): its name gives the flag, the environment variable and the file key,
//! and the field of [`Settings`] it sets gives its type and, through [`Settings::default`],
//! its default, which comes from the crate that owns the setting (`HubConfig`,
//! `ServerConfig`, `ClusterConfig`). `--help`, the file reader and docs/configuration.md
//! ([`docs`]) read that one list.
//!
//! The flags are built with clap's builder, not its derive: the derive needs a struct field
//! with literal attributes per flag, a second copy of every setting, and could not tell a
//! flag left out from one given its default, which the file's place between the two needs.
//! The builder makes each argument from its definition, and [`ServeArgs`] plugs it into the
//! derived `statecast` command. clap resolves a flag against its environment variable;
//! [`Settings::resolve`] lays the result over the file, and the file over the defaults.
//!
//! # Layout
//! - [`setting`]: what a setting is, and how one definition becomes a flag, a variable, a
//!   file key and a help line.
//! - [`defs`]: every setting.
//! - [`docs`]: docs/configuration.md, generated from [`defs`] (`statecast config-docs`).

mod defs;
pub mod docs;
pub mod entities;
mod setting;
mod topics;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, Command, FromArgMatches};
use statecast_bridge::BridgeConfig;
use statecast_cluster::ClusterConfig;
use statecast_core::HubConfig;
use statecast_server::{AuthConfig, Limits, Mappings, ServerConfig};

pub use defs::SETTINGS;

/// The flags of `statecast serve` as clap parsed them, each perhaps from its environment
/// variable; one argument per flagged entry of [`SETTINGS`].
#[derive(Debug, Clone)]
pub struct ServeArgs(ArgMatches);

impl Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let mut defaults = Settings::default();
        SETTINGS
            .iter()
            .filter_map(|setting| setting.arg(&mut defaults))
            .fold(command, Command::arg)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(ServeArgs(matches.clone()))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0 = matches.clone();
        Ok(())
    }
}

/// Every setting, resolved. Each field is set by its entry in [`SETTINGS`]; its value in
/// [`Settings::default`] is the setting's default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Move a store file that is empty or not a store aside instead of refusing to start.
    pub reset_broken_store: bool,
    /// What all topics' history may hold in the embedded store.
    pub history_max_bytes: u64,
    /// The file these came from.
    pub config: Option<PathBuf>,
    /// History, state size, outbox and topic bounds.
    pub hub: HubConfig,
    pub heartbeat_ms: u64,
    pub max_frame_bytes: usize,
    pub limits: Limits,
    pub demo: bool,
    pub insecure: bool,
    /// Certificate and key files: both or neither (see [`Settings::tls`]).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allowed_origins: Vec<String>,
    pub auth: AuthConfig,
    pub bridge: BridgeConfig,
    /// Redis, when hubs share state (see [`Settings::cluster`]); `None`: the embedded
    /// store in `data_dir`.
    pub cluster_url: Option<String>,
    pub cluster_prefix: String,
    pub node_id: String,
    pub cluster_stream_len: u64,
    pub socketio: Mappings,
    /// `[[topics]]` as written; compiled into `hub.policies` once the file is read.
    pub topics: Vec<topics::TopicsEntry>,
    /// `[[entity]]` as written; checked into `entities` once the file is read.
    pub entity_tables: Vec<toml::Table>,
    /// The entity descriptions the hub writes at start (see `config/entities.rs`).
    pub entities: Vec<entities::EntityEntry>,
}

impl Default for Settings {
    /// The CLI owns the address and the store's directory; every other default is the
    /// owning crate's.
    fn default() -> Settings {
        let server = ServerConfig::default();
        let cluster = ClusterConfig::new(String::new());
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./statecast-data"),
            reset_broken_store: false,
            history_max_bytes: statecast_store::DEFAULT_HISTORY_MAX_BYTES,
            config: None,
            hub: HubConfig::default(),
            heartbeat_ms: server.heartbeat_ms,
            max_frame_bytes: server.max_frame_bytes,
            limits: server.limits,
            demo: false,
            insecure: false,
            tls_cert: None,
            tls_key: None,
            allowed_origins: server.allowed_origins,
            auth: AuthConfig::default(),
            bridge: BridgeConfig::default(),
            cluster_url: None,
            cluster_prefix: cluster.prefix,
            node_id: cluster.node,
            cluster_stream_len: cluster.stream_len,
            socketio: server.socketio,
            topics: Vec::new(),
            entity_tables: Vec::new(),
            entities: Vec::new(),
        }
    }
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> Result<Settings, String> {
        let ServeArgs(matches) = args;
        let mut settings = Settings::default();
        // The file first, so that what the flags and the environment give overwrites it.
        if let Some(path) = matches.get_one::<PathBuf>(defs::CONFIG) {
            read_file(path, &mut settings)?;
            let base = path.parent().unwrap_or(Path::new("."));
            settings.hub.policies = topics::compile(&settings.topics, base)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
            settings.entities = entities::compile(&settings.entity_tables)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
        for setting in SETTINGS {
            setting.take_given(&matches, &mut settings);
        }
        settings.check()?;
        Ok(settings)
    }

    /// Certificate and key files, when TLS is on.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// The cluster engine's settings, when hubs share state through Redis.
    pub fn cluster(&self) -> Option<ClusterConfig> {
        let url = self.cluster_url.clone()?;
        Some(ClusterConfig {
            url,
            prefix: self.cluster_prefix.clone(),
            node: self.node_id.clone(),
            stream_len: self.cluster_stream_len,
            history_max_bytes: self.history_max_bytes,
        })
    }

    /// What no single setting can check.
    fn check(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("give both tls_cert and tls_key, or neither".into());
        }
        let l = &self.limits;
        if l.max_connections == 0
            || l.max_connections_per_ip == 0
            || l.messages_per_second == 0
            || l.messages_per_second_per_ip == 0
            || l.handshake_timeout_ms == 0
        {
            return Err("connection, rate and timeout limits must be at least 1".into());
        }
        if self.heartbeat_ms == 0 {
            return Err("heartbeat_ms must be at least 1".into());
        }
        if self.hub.outbox.max_messages == 0 || self.hub.outbox.max_bytes == 0 {
            return Err("outbox_messages and outbox_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// Reads the TOML file into `settings`: each key is a setting's (see [`SETTINGS`]), and
/// any other is refused.
fn read_file(path: &Path, settings: &mut Settings) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
    read_table(table, "", settings).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Reads the keys of `table` (the file's top level, or `[cluster]` with `prefix`
/// `"cluster."`).
fn read_table(table: toml::Table, prefix: &str, settings: &mut Settings) -> Result<(), String> {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        if let Some(setting) = SETTINGS.iter().find(|s| s.key == Some(key.as_str())) {
            setting
                .read(settings, value)
                .map_err(|e| format!("{key}: {e}"))?;
            continue;
        }
        let inner = format!("{key}.");
        let is_table = SETTINGS
            .iter()
            .any(|s| s.key.is_some_and(|k| k.starts_with(&inner)));
        match value {
            toml::Value::Table(table) if is_table => read_table(table, &inner, settings)?,
            _ if is_table => return Err(format!("{key}: expected a table")),
            _ if key == "history_len" => {
                // Renamed in version 2: `history` is now the durable, queryable kind.
                return Err(
                    "`history_len` is now `resume_len` (changes kept in memory for \
                            resuming clients); rename it"
                        .to_string(),
                );
            }
            _ => {
                let mut known: Vec<&str> = SETTINGS
                    .iter()
                    .filter_map(|s| s.key?.strip_prefix(prefix)?.split('.').next())
                    .collect();
                known.dedup();
                return Err(format!(
                    "unknown field `{key}`, expected one of `{}`",
                    known.join("`, `")
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::setting::{Field, Setting};
    use super::*;

    /// The flags as clap parses them, with no environment variables (the test process's
    /// own must not leak in).
    fn try_args(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        let command = ServeArgs::augment_args(Command::new("serve")).mut_args(|a| a.env(None));
        let matches =
            command.try_get_matches_from(std::iter::once("serve").chain(flags.iter().copied()))?;
        ServeArgs::from_arg_matches(&matches)
    }

    fn args(flags: &[&str]) -> ServeArgs {
        try_args(flags).unwrap()
    }

    fn path_str(path: &Path) -> &str {
        path.to_str().expect("a UTF-8 path")
    }

    #[test]
    fn the_socketio_section_is_checked_by_the_server() {
        let s = resolve_text("[socketio]\npath = \"/io/\"\n").unwrap();
        assert_eq!(s.socketio.path, "/io");
        let err =
            resolve_text("[[socketio.emit]]\nevent = \"patch\"\ntopic = \"a\"\n").unwrap_err();
        assert!(err.contains("socketio.emit[1] (patch)"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nheartbeat_ms = 500\nresume_len = 7\n",
        )
        .unwrap();
        let args = args(&["--config", path_str(&path), "--heartbeat-ms", "1000"]);
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.heartbeat_ms, 1000);
        assert_eq!(s.hub.resume_len, 7);
        assert_eq!(s.hub.max_state_bytes, 256 << 10);
    }

    #[test]
    fn security_limits_and_tls_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(
            &path,
            r#"
            max_connections_per_ip = 7
            messages_per_second = 9
            tls_cert = "c.pem"
            tls_key = "k.pem"
            allowed_origins = ["https://a.example"]
            [auth]
            [[auth.keys]]
            key = "k"
            read = ["a/#"]
            "#,
        )
        .unwrap();
        let args = args(&["--config", path_str(&path), "--messages-per-second", "11"]);
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.limits.max_connections_per_ip, 7);
        assert_eq!(s.limits.messages_per_second, 11);
        assert_eq!(s.limits.max_connections, Limits::default().max_connections);
        assert_eq!(s.tls(), Some((Path::new("c.pem"), Path::new("k.pem"))));
        assert_eq!(s.allowed_origins, ["https://a.example"]);
        assert_eq!(s.auth.keys.len(), 1);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(&path, "tls_cert = \"c.pem\"\n").unwrap();
        let err = Settings::resolve(args(&["--config", path_str(&path)])).unwrap_err();
        assert!(err.contains("tls_key"), "{err}");
    }

    fn resolve_text(text: &str) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(&path, text).unwrap();
        Settings::resolve(args(&["--config", path_str(&path)]))
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = Settings::resolve(args(&["--config", path_str(&path)])).unwrap_err();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn the_renamed_history_len_is_refused_naming_its_new_name() {
        let err = resolve_text("history_len = 7\n").unwrap_err();
        assert!(err.contains("resume_len"), "{err}");
    }

    /// `Settings` without the random node name and the file's path, to compare two
    /// resolutions.
    fn comparable(mut s: Settings) -> String {
        s.node_id.clear();
        s.config = None;
        format!("{s:?}")
    }

    /// A value for a setting with this value name, on the command line and in the file.
    fn sample(value_name: &str) -> (&'static str, toml::Value) {
        match value_name {
            "N" => ("7", toml::Value::Integer(7)),
            "ADDR" => ("127.0.0.1:9", toml::Value::String("127.0.0.1:9".into())),
            "URL" => (
                "redis://127.0.0.1:9",
                toml::Value::String("redis://127.0.0.1:9".into()),
            ),
            "" => ("", toml::Value::Boolean(true)),
            _ => ("some-name", toml::Value::String("some-name".into())),
        }
    }

    /// Settings from a file holding `settings`, each with its sample value.
    fn resolve_file(settings: &[&Setting]) -> Result<Settings, String> {
        let mut file = toml::Table::new();
        for setting in settings {
            let key = setting.key.expect("a file key");
            let (table, name) = match key.split_once('.') {
                Some((table, name)) => (
                    file.entry(table)
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                        .as_table_mut()
                        .expect("a table"),
                    name,
                ),
                None => (&mut file, key),
            };
            table.insert(name.into(), sample(setting.value_name).1);
        }
        resolve_text(&toml::to_string(&file).expect("TOML"))
    }

    /// Settings from flags: each of `settings` with its sample value.
    fn resolve_flags(settings: &[&Setting]) -> Result<Settings, String> {
        let mut flags = Vec::new();
        for setting in settings {
            flags.push(format!("--{}", setting.long().expect("a flag")));
            let (text, _) = sample(setting.value_name);
            if !text.is_empty() {
                flags.push(text.to_string());
            }
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Settings::resolve(try_args(&flags).map_err(|e| e.to_string())?)
    }

    fn by_flag(flag: &str) -> &'static Setting {
        SETTINGS
            .iter()
            .find(|s| s.flag == Some(flag))
            .unwrap_or_else(|| panic!("no setting {flag}"))
    }

    #[test]
    fn the_definitions_are_consistent() {
        for (i, setting) in SETTINGS.iter().enumerate() {
            let name = setting.flag.or(setting.key).expect("a flag or a key");
            assert!(
                setting.flag.is_some() || setting.key.is_some(),
                "{name}: nowhere to come from"
            );
            let doc = setting.doc;
            assert!(
                !doc.is_empty() && !doc.ends_with('.') && !doc.contains('\n'),
                "{name}: one line without a final period: {doc:?}"
            );
            match setting.field {
                Field::Section(_) => {
                    assert!(setting.flag.is_none(), "{name}: a section is file-only")
                }
                Field::Switch(_) => {
                    assert_eq!(setting.value_name, "", "{name}: a switch takes no value")
                }
                Field::Value(_) => assert!(!setting.value_name.is_empty(), "{name}: no value name"),
            }
            if let Some(required) = setting.requires {
                assert_eq!(
                    by_flag(required).requires,
                    setting.flag,
                    "{name}: requires goes both ways"
                );
            }
            // A flag's file key is the flag's own name, or a key of a table (`cluster.url`).
            if let (Some(flag), Some(key)) = (setting.flag, setting.key) {
                assert!(key == flag || key.contains('.'), "{name}: file key {key}");
            }
            for other in &SETTINGS[i + 1..] {
                assert!(
                    setting.flag.is_none() || setting.flag != other.flag,
                    "{name}: flag twice"
                );
                assert!(
                    setting.key.is_none() || setting.key != other.key,
                    "{name}: key twice"
                );
            }
        }
    }

    #[test]
    fn help_lists_every_flag_with_its_doc_default_and_environment_variable() {
        let help = ServeArgs::augment_args(Command::new("serve"))
            .render_long_help()
            .to_string();
        let mut defaults = Settings::default();
        for setting in SETTINGS {
            let (Some(long), Some(env)) = (setting.long(), setting.env()) else {
                continue;
            };
            let flag = match setting.value_name {
                "" => format!("--{long}\n"),
                value => format!("--{long} <{value}>\n"),
            };
            let at = help
                .find(&flag)
                .unwrap_or_else(|| panic!("no {flag} in\n{help}"));
            let entry = &help[at..];
            let entry = &entry[..entry.find("\n\n").unwrap_or(entry.len())];
            let line = setting.help(&mut defaults);
            assert!(entry.contains(&line), "{line:?} not in\n{entry}");
            assert!(
                entry.contains(&format!("[env: {env}=")),
                "no {env} in\n{entry}"
            );
            assert_eq!(
                env,
                format!("STATECAST_{}", long.replace('-', "_").to_uppercase())
            );
        }
        // Defaults come from the owning crates.
        assert!(help.contains(&format!(
            "[default: {}]",
            HubConfig::default().max_state_bytes
        )));
        assert!(help.contains(&format!("[default: {}]", Limits::default().max_connections)));
        assert!(help.contains("This hub's name in the cluster [default: random]"));
    }

    #[test]
    fn a_flag_and_its_file_key_set_the_same_field() {
        let default = comparable(Settings::default());
        for setting in SETTINGS
            .iter()
            .filter(|s| s.flag.is_some() && s.key.is_some())
        {
            let name = setting.flag.unwrap_or_default();
            let mut together = vec![setting];
            together.extend(setting.requires.map(by_flag));
            let from_flags = resolve_flags(&together).unwrap_or_else(|e| panic!("{name}: {e}"));
            let from_file = resolve_file(&together).unwrap_or_else(|e| panic!("{name}: {e}"));
            if setting.flag == Some("node_id") {
                assert_eq!(from_flags.node_id, "some-name");
                assert_eq!(from_file.node_id, "some-name");
                continue;
            }
            let (from_flags, from_file) = (comparable(from_flags), comparable(from_file));
            assert_ne!(from_flags, default, "{name} changed nothing");
            assert_eq!(
                from_flags, from_file,
                "{name}: the flag and the file key differ"
            );
        }
    }

    #[test]
    fn each_number_lands_in_its_own_field() {
        let names = [
            "heartbeat_ms",
            "resume_len",
            "max_state_bytes",
            "max_frame_bytes",
            "outbox_messages",
            "outbox_bytes",
            "max_connections",
            "max_connections_per_ip",
            "max_subscriptions",
            "max_topics",
            "messages_per_second",
            "messages_per_second_per_ip",
            "handshake_timeout_ms",
        ];
        let flags: Vec<String> = names
            .iter()
            .enumerate()
            .flat_map(|(i, name)| [format!("--{}", name.replace('_', "-")), (i + 1).to_string()])
            .collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let s = Settings::resolve(args(&flags)).unwrap();
        let l = &s.limits;
        let got = [
            s.heartbeat_ms,
            s.hub.resume_len as u64,
            s.hub.max_state_bytes as u64,
            s.max_frame_bytes as u64,
            s.hub.outbox.max_messages as u64,
            s.hub.outbox.max_bytes as u64,
            l.max_connections as u64,
            l.max_connections_per_ip as u64,
            l.max_subscriptions as u64,
            s.hub.max_topics as u64,
            u64::from(l.messages_per_second),
            u64::from(l.messages_per_second_per_ip),
            l.handshake_timeout_ms,
        ];
        assert_eq!(got, std::array::from_fn(|i| i as u64 + 1));
    }

    #[test]
    fn a_listen_address_may_be_a_host_name() {
        let s = resolve_text("listen = \"localhost:9000\"\n").unwrap();
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        let s = Settings::resolve(args(&["--listen", "[::1]:9001"])).unwrap();
        assert_eq!(s.listen.to_string(), "[::1]:9001");
        assert!(try_args(&["--listen", "localhost"]).is_err());
    }

    #[test]
    fn a_switch_in_the_file_stays_on_whatever_the_flags_say() {
        let s = resolve_text("demo = true\n").unwrap();
        assert!(s.demo && !s.insecure);
        assert!(Settings::resolve(args(&["--insecure"])).unwrap().insecure);
    }

    #[test]
    fn the_cluster_table_gives_every_cluster_setting() {
        let s = resolve_text(
            "[cluster]\nurl = \"redis://h:1\"\nprefix = \"p\"\nnode = \"n\"\nstream_len = 9\n",
        )
        .unwrap();
        let c = s.cluster().expect("a cluster");
        assert_eq!(
            (
                c.url.as_str(),
                c.prefix.as_str(),
                c.node.as_str(),
                c.stream_len
            ),
            ("redis://h:1", "p", "n", 9)
        );
        assert!(resolve_text("").unwrap().cluster().is_none());
        let err = resolve_text("[cluster]\nnodes = 1\n").unwrap_err();
        assert!(err.contains("cluster.nodes"), "{err}");
        let err = resolve_text("heartbeat_ms = \"soon\"\n").unwrap_err();
        assert!(
            err.contains("heartbeat_ms") && err.contains("soon"),
            "{err}"
        );
    }
}
