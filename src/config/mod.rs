//! The config file: one TOML file describes one host.
//!
//! Loading never stops at the first mistake: a syntax error ends parsing,
//! but after that each table (`[host]`, every `[[service]]`, every
//! `[[timer]]`) is read on its own, and then the semantic rules run over
//! everything that could be read, so the operator sees every error at once,
//! each with its file, line and column.

mod instances;
mod model;
mod validate;
pub mod values;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::util::diag::{Diagnostics, Severity};
pub use instances::{Instance, Instances};
pub use model::*;

/// The tables a config file may have at its top level.
const TOP_LEVEL_KEYS: [&str; 4] = ["host", "service", "timer", "capacity"];

/// A config file as read: its place (relative command paths are taken from
/// its folder) and its tables.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// The file's text, for diagnostics found later (against the host).
    pub text: String,
    pub host: HostConfig,
    pub services: Vec<ServiceConfig>,
    pub timers: Vec<TimerConfig>,
    pub capacity: Option<CapacityConfig>,
}

impl Config {
    /// An empty set of diagnostics about this file.
    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics::new(&self.path, &self.text)
    }

    /// Each service's position in `services`, by name.
    pub fn service_index(&self) -> std::collections::BTreeMap<&str, usize> {
        self.services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.get_ref().as_str(), i))
            .collect()
    }

    /// The folder the config file is in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Reads and checks the config at `path`. Every problem found is in the
/// returned diagnostics; the config is `None` when the file could not be
/// read or parsed at all, and may come with errors otherwise: the caller
/// decides whether to go on.
pub fn load(path: &Path) -> (Option<Config>, Diagnostics) {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => {
                let mut diags = Diagnostics::new(path, &text);
                let config = parse(path, &text, &mut diags);
                (config, diags)
            }
            Err(e) => (None, not_utf8(path, &e)),
        },
        Err(e) => {
            let mut diags = Diagnostics::new(path, "");
            diags.error(None, format!("cannot read the config file: {e}"));
            (None, diags)
        }
    }
}

/// A file that is not UTF-8, with the place of its first bad byte (TOML is
/// UTF-8 only).
fn not_utf8(path: &Path, e: &std::string::FromUtf8Error) -> Diagnostics {
    let text = String::from_utf8_lossy(e.as_bytes());
    let at = e.utf8_error().valid_up_to();
    let mut diags = Diagnostics::new(path, &text);
    diags.error(
        at..at + 1,
        format!(
            "the config is not UTF-8 here (byte {:#04x}); TOML files are UTF-8 text",
            e.as_bytes()[at]
        ),
    );
    diags
}

/// Reports every string, and every key, with a NUL character in it: no
/// path, argument or environment value can hold one (the kernel ends a C
/// string there), so a service given one would fail to start forever.
fn nul_strings(table: &DeTable<'_>, diags: &mut Diagnostics) {
    fn value(v: &Spanned<DeValue<'_>>, diags: &mut Diagnostics) {
        match v.get_ref() {
            DeValue::String(s) if s.contains('\0') => diags.error(
                v.span(),
                "a NUL character (\\u0000) cannot be in a path, an argument or an environment value",
            ),
            DeValue::Array(items) => items.iter().for_each(|i| value(i, diags)),
            DeValue::Table(t) => nul_strings(t, diags),
            _ => {}
        }
    }
    for (k, v) in table {
        if k.get_ref().contains('\0') {
            diags.error(k.span(), "a NUL character (\\u0000) cannot be in a key");
        }
        value(v, diags);
    }
}

/// Only `[host] state_dir` of the config at `path`, for the commands that
/// talk to the daemon: the rest of the file is neither checked nor
/// converted (a config with mistakes still names its folder), so `status`
/// costs the same at 1000 services as at 2. The default when the file
/// cannot be read or parsed, or does not say.
pub fn state_dir_only(path: &Path) -> PathBuf {
    host_dirs_only(path).0
}

/// Only `[host] log_dir` of the config at `path` (see [`state_dir_only`]).
pub fn log_dir_only(path: &Path) -> PathBuf {
    host_dirs_only(path).1
}

fn host_dirs_only(path: &Path) -> (PathBuf, PathBuf) {
    #[derive(serde::Deserialize)]
    struct File {
        host: Option<Host>,
    }
    #[derive(serde::Deserialize)]
    struct Host {
        state_dir: Option<PathBuf>,
        log_dir: Option<PathBuf>,
    }
    let host = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<File>(&text).ok())
        .and_then(|f| f.host);
    let (state, log) = host.map_or((None, None), |h| (h.state_dir, h.log_dir));
    (
        state.unwrap_or_else(default_state_dir),
        log.unwrap_or_else(default_log_dir),
    )
}

/// `text` as a TOML table with every key's and value's span, or `None`
/// with each syntax error in `diags`.
pub fn syntax<'i>(text: &'i str, diags: &mut Diagnostics) -> Option<DeTable<'i>> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    for e in &syntax_errors {
        diags.error(e.span(), e.message().trim().to_string());
    }
    syntax_errors.is_empty().then(|| root.into_inner())
}

/// Parses `text` (the content of `path`) and runs the file's own rules.
pub fn parse(path: &Path, text: &str, diags: &mut Diagnostics) -> Option<Config> {
    let root = syntax(text, diags)?;
    nul_strings(&root, diags);
    let mut config = Config {
        path: path.to_path_buf(),
        text: text.to_string(),
        host: HostConfig::default(),
        services: Vec::new(),
        timers: Vec::new(),
        capacity: None,
    };
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "host" => {
                if let Some(host) = read_table(diags, value) {
                    config.host = host;
                }
            }
            "service" => config.services = read_array(diags, "service", value),
            "timer" => config.timers = read_array(diags, "timer", value),
            "capacity" => config.capacity = read_table(diags, value),
            other => diags.error(
                key.span(),
                format!(
                    "unknown table `{other}`{}; a config has {}",
                    suggestion(other),
                    TOP_LEVEL_KEYS.map(|k| format!("`{k}`")).join(", ")
                ),
            ),
        }
    }
    validate::validate(&config, diags);
    Some(config)
}

/// Hints for the top-level typos people make most.
fn suggestion(key: &str) -> &'static str {
    match key {
        "services" | "services." => " (did you mean `[[service]]`?)",
        "timers" => " (did you mean `[[timer]]`?)",
        "hosts" | "defaults" => {
            " (did you mean `[host]`? a cluster file, with `[defaults]` and `[hosts.NAME]`, is checked with `venussup check --cluster` and rendered per host with `venussup render`)"
        }
        "global" => " (did you mean `[host]`?)",
        _ => "",
    }
}

/// Most mistakes reported for one table before giving up on it.
const MAX_ERRORS_PER_TABLE: usize = 32;

/// Deserializes one table, reporting every mistake in it: after each error
/// the key it points at is set aside and the table is read again, so a
/// typo in one key does not hide the next. A table read that way is
/// returned without the bad keys, for the cross-table rules (names,
/// `after`); its errors are already in `diags`.
pub(crate) fn read_table<T: DeserializeOwned>(
    diags: &mut Diagnostics,
    value: Spanned<DeValue<'_>>,
) -> Option<T> {
    let span = value.span();
    let mut value = value;
    value.get_mut().make_owned();
    for _ in 0..MAX_ERRORS_PER_TABLE {
        let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let at: Range<usize> = error.span().unwrap_or_else(|| span.clone());
        diags.error(at.clone(), error.message().trim().to_string());
        let DeValue::Table(table) = value.get_mut() else {
            return None;
        };
        let covers = |r: Range<usize>| r.start <= at.start && at.start < r.end.max(r.start + 1);
        let bad_key = table
            .iter()
            .find(|(k, v)| covers(k.span()) || covers(v.span()))
            .map(|(k, _)| k.get_ref().to_string());
        match bad_key {
            Some(key) => {
                table.remove(key.as_str());
            }
            None => return None, // the error is about the table as a whole
        }
    }
    None
}

/// Deserializes each table of an array of tables (`[[service]]`) on its own,
/// so one bad service does not hide the mistakes of the next.
fn read_array<T: DeserializeOwned>(
    diags: &mut Diagnostics,
    what: &str,
    value: Spanned<DeValue<'_>>,
) -> Vec<T> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .filter_map(|item| read_table(diags, item))
            .collect(),
        other => {
            diags.error(
                span,
                format!(
                    "`{what}` must be an array of tables written `[[{what}]]`, not a {}",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    }
}

/// Loads the config at `path` for a command that needs it valid: the
/// diagnostics, one per line, when it is not.
pub fn load_valid(path: &Path) -> Result<Config, String> {
    let (config, diags) = load(path);
    let errors: Vec<String> = diags
        .into_sorted()
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(format!(
            "{}\nthe config is invalid; `venussup check` shows everything",
            errors.join("\n")
        )),
    }
}

#[cfg(test)]
mod state_dir_tests {
    use super::*;

    fn at(text: &str) -> PathBuf {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        std::fs::write(&path, text).unwrap();
        state_dir_only(&path)
    }

    #[test]
    fn only_the_state_dir_is_read_the_rest_unchecked() {
        // A service with mistakes (no command, an unknown key, a bad type)
        // and 1000 of them: the folder is still named.
        let mut text = "[host]\nstate_dir = \"/run/v\"\nsmt = 3\n".to_string();
        for i in 0..1000 {
            text.push_str(&format!(
                "[[service]]\nname = \"w{i}\"\ncpus = true\nbogus = 1\n"
            ));
        }
        assert_eq!(at(&text), Path::new("/run/v"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        std::fs::write(
            &path,
            text.replace("[host]\n", "[host]\nlog_dir = \"/l\"\n"),
        )
        .unwrap();
        assert_eq!(log_dir_only(&path), Path::new("/l"));
    }

    #[test]
    fn the_default_when_the_file_does_not_say_or_cannot_be_read() {
        assert_eq!(at("[[service]]\nname = \"a\"\n"), default_state_dir());
        assert_eq!(at("[host\n"), default_state_dir());
        assert_eq!(
            state_dir_only(Path::new("/nonexistent/v.toml")),
            default_state_dir()
        );
    }
}
