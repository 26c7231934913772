//! What one setting of `statecast serve` is ([`Setting`]), and the machinery that turns one
//! definition into its flag, its environment variable, its file key and its help line.
//!
//! A setting writes into one field of [`Settings`] through an accessor; the field's type
//! says how clap parses the flag and how the file's value is read ([`Value`]), and the
//! field's value in [`Settings::default`] (taken from the crate that owns the setting) is
//! the default that help shows. Nothing here repeats a name or a default.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::builder::ValueParser;
use clap::{Arg, ArgAction, ArgMatches};
use serde::de::DeserializeOwned;

use super::Settings;

/// The prefix of every setting's environment variable.
const ENV_PREFIX: &str = "STATECAST_";

/// One setting, defined once: where it may come from, its doc, and the field it sets.
pub struct Setting {
    /// `heartbeat_ms` gives `--heartbeat-ms` and `STATECAST_HEARTBEAT_MS`; `None`: the
    /// setting is only in the file.
    pub flag: Option<&'static str>,
    /// Its key in the TOML file, `table.key` inside a table (`cluster.url`); `None`: it
    /// is not in the file.
    pub key: Option<&'static str>,
    /// What the value is, in help (`N`, `FILE`); empty for a switch or a file section.
    pub value_name: &'static str,
    /// One line for `--help` and the docs.
    pub doc: &'static str,
    /// The default in words, where the value says nothing useful (a random name).
    pub default_text: Option<&'static str>,
    /// A flag this one cannot go without (a certificate and its key).
    pub requires: Option<&'static str>,
    pub(super) field: Field,
}

/// How a setting updates [`Settings`].
pub(super) enum Field {
    /// On or off. A switch only turns on: `--demo`, `STATECAST_DEMO=true` or
    /// `demo = true` in the file, and none of them turns off what another turned on.
    Switch(fn(&mut Settings) -> &mut bool),
    /// One value, from the flag, its environment variable or the file.
    Value(fn(&mut Settings) -> &mut dyn Value),
    /// A table or a list of tables in the file, read by its own code.
    Section(fn(&mut Settings, toml::Value) -> Result<(), String>),
}

impl Setting {
    /// A setting with a flag and, under the same name, a file key.
    pub(super) const fn new(
        name: &'static str,
        value_name: &'static str,
        doc: &'static str,
        field: Field,
    ) -> Setting {
        Setting {
            flag: Some(name),
            key: Some(name),
            value_name,
            doc,
            default_text: None,
            requires: None,
            field,
        }
    }

    /// A setting only the file gives.
    pub(super) const fn file_only(
        key: &'static str,
        value_name: &'static str,
        doc: &'static str,
        field: Field,
    ) -> Setting {
        Setting {
            flag: None,
            key: Some(key),
            value_name,
            doc,
            default_text: None,
            requires: None,
            field,
        }
    }

    /// Under another key in the file (`cluster.url` for `--cluster`).
    pub(super) const fn key(mut self, key: &'static str) -> Setting {
        self.key = Some(key);
        self
    }

    /// Not in the file (`--config` names the file).
    pub(super) const fn not_in_file(mut self) -> Setting {
        self.key = None;
        self
    }

    pub(super) const fn default_text(mut self, text: &'static str) -> Setting {
        self.default_text = Some(text);
        self
    }

    pub(super) const fn requires(mut self, flag: &'static str) -> Setting {
        self.requires = Some(flag);
        self
    }

    /// `--heartbeat-ms`.
    pub fn long(&self) -> Option<String> {
        self.flag.map(|name| name.replace('_', "-"))
    }

    /// `STATECAST_HEARTBEAT_MS`.
    pub fn env(&self) -> Option<String> {
        self.flag
            .map(|name| format!("{ENV_PREFIX}{}", name.to_ascii_uppercase()))
    }

    /// The value when nothing sets it, as help shows it; `None` when it is unset, off or
    /// empty.
    pub fn default(&self, defaults: &mut Settings) -> Option<String> {
        if let Some(text) = self.default_text {
            return Some(text.to_string());
        }
        match self.field {
            Field::Value(field) => field(defaults).shown(),
            Field::Switch(_) | Field::Section(_) => None,
        }
    }

    /// The line `--help` shows: the doc and the default.
    pub fn help(&self, defaults: &mut Settings) -> String {
        match self.default(defaults) {
            Some(default) => format!("{} [default: {default}]", self.doc),
            None => self.doc.to_string(),
        }
    }

    /// The clap argument: flag, environment variable, help, parser. `None` for a
    /// setting only the file gives.
    pub(super) fn arg(&self, defaults: &mut Settings) -> Option<Arg> {
        let (Some(id), Some(long), Some(env)) = (self.flag, self.long(), self.env()) else {
            return None;
        };
        let arg = Arg::new(id).long(long).env(env).help(self.help(defaults));
        let arg = match self.requires {
            Some(flag) => arg.requires(flag),
            None => arg,
        };
        Some(match self.field {
            Field::Switch(_) => arg.action(ArgAction::SetTrue),
            Field::Value(field) => arg
                .action(ArgAction::Set)
                .value_name(self.value_name)
                .value_parser(field(defaults).parser()),
            // Sections have no flag: see `the_definitions_are_consistent`.
            Field::Section(_) => return None,
        })
    }

    /// Takes what the flag or its environment variable gave, if anything.
    pub(super) fn take_given(&self, matches: &ArgMatches, settings: &mut Settings) {
        let Some(id) = self.flag else {
            return;
        };
        match self.field {
            Field::Switch(field) => {
                if matches.get_flag(id) {
                    *field(settings) = true;
                }
            }
            Field::Value(field) => {
                field(settings).take(matches, id);
            }
            Field::Section(_) => {}
        }
    }

    /// Takes the file's value.
    pub(super) fn read(&self, settings: &mut Settings, value: toml::Value) -> Result<(), String> {
        match self.field {
            Field::Switch(field) => *field(settings) = typed(value)?,
            Field::Value(field) => field(settings).read(value)?,
            Field::Section(read) => read(settings, value)?,
        }
        Ok(())
    }
}

/// A file value as `T`, or serde's reason why not.
pub(super) fn typed<T: DeserializeOwned>(value: toml::Value) -> Result<T, String> {
    value
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

/// A setting's value, whatever its type: how clap parses it, how the file gives it, how
/// help shows it.
pub(super) trait Value {
    fn parser(&self) -> ValueParser;
    /// Takes the value clap parsed for `id`; whether there was one.
    fn take(&mut self, matches: &ArgMatches, id: &str) -> bool;
    fn read(&mut self, value: toml::Value) -> Result<(), String>;
    /// The value as help shows it; `None` when unset.
    fn shown(&self) -> Option<String>;
}

/// An optional setting: unset unless given.
impl<T: Value + Default> Value for Option<T> {
    fn parser(&self) -> ValueParser {
        T::default().parser()
    }
    fn take(&mut self, matches: &ArgMatches, id: &str) -> bool {
        let mut value = T::default();
        let given = value.take(matches, id);
        if given {
            *self = Some(value);
        }
        given
    }
    fn read(&mut self, value: toml::Value) -> Result<(), String> {
        let mut read = T::default();
        read.read(value)?;
        *self = Some(read);
        Ok(())
    }
    fn shown(&self) -> Option<String> {
        self.as_ref().and_then(Value::shown)
    }
}

/// `Value` for a type clap knows how to parse, shown by `$show`; or parsed by `$parser`
/// from the command line and `$read` from the file.
macro_rules! value {
    ($type:ty, $show:expr) => {
        value!($type, $show, clap::value_parser!($type).into(), typed);
    };
    ($type:ty, $show:expr, $parser:expr, $read:expr) => {
        impl Value for $type {
            fn parser(&self) -> ValueParser {
                $parser
            }
            fn take(&mut self, matches: &ArgMatches, id: &str) -> bool {
                let given = matches.get_one::<$type>(id);
                if let Some(value) = given {
                    *self = value.clone();
                }
                given.is_some()
            }
            fn read(&mut self, value: toml::Value) -> Result<(), String> {
                let read: fn(toml::Value) -> Result<$type, String> = $read;
                *self = read(value)?;
                Ok(())
            }
            fn shown(&self) -> Option<String> {
                Some($show(self))
            }
        }
    };
}

value!(u32, u32::to_string);
value!(u64, u64::to_string);
value!(usize, usize::to_string);
value!(String, String::clone);
value!(
    SocketAddr,
    SocketAddr::to_string,
    ValueParser::new(listen_addr),
    |value| listen_addr(&typed::<String>(value)?)
);
value!(PathBuf, |path: &PathBuf| path.display().to_string());

/// An address to listen on: `IP:PORT` as it is, or `HOST:PORT` resolved once; of several
/// addresses the first IPv4 one (`localhost` is 127.0.0.1 and ::1, and the client
/// subcommands look at 127.0.0.1), else the first.
fn listen_addr(given: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = given.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = given
        .to_socket_addrs()
        .map_err(|e| format!("{given:?} is not IP:PORT or HOST:PORT: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{given:?} resolves to no address"))
}
