//! The cluster file: one TOML file for every host of a deployment, from
//! which each host's own config is derived exactly (`venussup render`),
//! and the rules across hosts that no single host's config can show
//! (`venussup check --cluster`).
//!
//! ```toml
//! [defaults.host]          # [host] of every host, key by key
//! [defaults.capacity]      # [capacity] of every host, key by key
//! [hosts.NAME]
//! address = "192.168.1.10" # where the other hosts reach this one
//! [hosts.NAME.host]        # merged over [defaults.host], the host winning
//! [[hosts.NAME.service]]   # this host's services, as in its own config
//! [[hosts.NAME.timer]]
//! [hosts.NAME.capacity]    # merged over [defaults.capacity]
//! [hosts.NAME.sealers.SERVICE]   # what a sealer's own config.toml says
//! [hosts.NAME.tokens]      # WORKER = "HOST:PATH" the worker's token came from
//! ```
//!
//! Pure: the caller reads the file; every diagnostic is about the cluster
//! file, at its own line and column.

pub mod render;
pub mod rules;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::config::{self, Config};
use crate::util::diag::{Diagnostic, Diagnostics, Position};
use render::{Rendered, Table};

/// The keys of the cluster file's top level.
const TOP_LEVEL_KEYS: [&str; 2] = ["defaults", "hosts"];
/// What `[defaults]` may hold: the tables merged into every host's.
const DEFAULT_KEYS: [&str; 2] = ["host", "capacity"];
/// What a `[hosts.NAME]` may hold beyond a per-host config's tables.
const HOST_KEYS: [&str; 7] = [
    "address", "host", "service", "timer", "capacity", "sealers", "tokens",
];

/// The cluster file as read.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub path: PathBuf,
    pub text: String,
    pub hosts: Vec<ClusterHost>,
}

/// One `[hosts.NAME]` and the config derived for it.
#[derive(Debug, Clone)]
pub struct ClusterHost {
    /// The name, spanned at its key in the cluster file.
    pub name: Spanned<String>,
    /// Where the other hosts reach this host.
    pub address: Option<Spanned<IpAddr>>,
    /// `[hosts.NAME.sealers.SERVICE]`: what each sealer's `config.toml` says.
    pub sealers: BTreeMap<Spanned<String>, SealerFacts>,
    /// `[hosts.NAME.tokens]`: for each worker, the `HOST:PATH` of the file
    /// its `[Sealer] Token` was copied from.
    pub tokens: BTreeMap<Spanned<String>, Spanned<String>>,
    /// The span, in the cluster file, of `[capacity] other_hosts` when given.
    pub other_hosts_at: Option<std::ops::Range<usize>>,
    /// The host's own config, as `venussup render` prints it.
    pub rendered: Rendered,
}

/// What a sealer's own `config.toml` (in its repo, on its host) says, as
/// far as the other hosts depend on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealerFacts {
    /// `[API] ListenAddress`, a multiaddr (`/ip4/0.0.0.0/tcp/2345/http`).
    pub listen: Spanned<String>,
    /// `[Sealing] MaxSealingSectors`.
    pub max_sealing_sectors: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostExtras {
    address: Option<Spanned<IpAddr>>,
    #[serde(default)]
    sealers: BTreeMap<Spanned<String>, SealerFacts>,
    #[serde(default)]
    tokens: BTreeMap<Spanned<String>, Spanned<String>>,
}

impl Cluster {
    pub fn host(&self, name: &str) -> Option<&ClusterHost> {
        self.hosts.iter().find(|h| h.name.get_ref() == name)
    }

    /// The host names, for messages: `host-a, host-b`.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self
            .hosts
            .iter()
            .map(|h| h.name.get_ref().as_str())
            .collect();
        names.join(", ")
    }

    /// Parses `host`'s derived config and runs the config file's own rules
    /// on it; every diagnostic goes to `diags` at the cluster file's place.
    pub fn config(&self, host: &ClusterHost, diags: &mut Diagnostics) -> Option<Config> {
        let mut own = Diagnostics::new(&self.path, &host.rendered.text);
        let config = config::parse(&self.path, &host.rendered.text, &mut own);
        self.carry(host, own, diags);
        config
    }

    /// Moves diagnostics found in `host`'s derived config (positions in
    /// its rendered text) to `diags`, at the cluster file's places, each
    /// saying which host it is about. One about the file as a whole points
    /// at the host's `[hosts.NAME]`.
    pub fn carry(&self, host: &ClusterHost, found: Diagnostics, diags: &mut Diagnostics) {
        for d in found.into_sorted() {
            let span = match d.position {
                Some(p) => {
                    let at = offset_of(&host.rendered.text, p);
                    host.rendered.source_span(at..at + 1)
                }
                None => host.name.span(),
            };
            push(diags, &d, span, host.name.get_ref());
        }
    }
}

fn push(diags: &mut Diagnostics, d: &Diagnostic, span: std::ops::Range<usize>, host: &str) {
    let message = format!("host `{host}`: {}", d.message);
    match d.severity {
        crate::util::diag::Severity::Error => diags.error(span, message),
        crate::util::diag::Severity::Warning => diags.warning(span, message),
        crate::util::diag::Severity::Note => diags.note(span, message),
    }
}

/// The byte offset of a line and column (both from 1, columns in
/// characters) in `text`.
fn offset_of(text: &str, p: Position) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(p.line.saturating_sub(1))
        .map(str::len)
        .sum();
    let line = text.get(line_start..).unwrap_or_default();
    line_start
        + line
            .char_indices()
            .nth(p.column.saturating_sub(1))
            .map_or(line.len(), |(i, _)| i)
}

/// Parses the cluster file `text` (read from `path`): every host's config
/// rendered, every mistake of the cluster file's own shape in `diags`.
/// `None` when it is not TOML at all.
pub fn parse(path: &Path, text: &str, diags: &mut Diagnostics) -> Option<Cluster> {
    let root = config::syntax(text, diags)?;
    let mut defaults: Option<&DeTable<'_>> = None;
    let mut hosts: Option<&Spanned<DeValue<'_>>> = None;
    for (key, value) in &root {
        match key.get_ref().as_ref() {
            "defaults" => defaults = table_of(value, "defaults", diags),
            "hosts" => hosts = Some(value),
            other => diags.error(
                key.span(),
                format!(
                    "unknown table `{other}` in the cluster file{}; it has {}",
                    if other == "host" {
                        " (did you mean `[hosts.NAME]`?)"
                    } else {
                        ""
                    },
                    list(&TOP_LEVEL_KEYS)
                ),
            ),
        }
    }
    if let Some(d) = defaults {
        for key in d.keys() {
            if !DEFAULT_KEYS.contains(&key.get_ref().as_ref()) {
                diags.error(
                    key.span(),
                    format!(
                        "`[defaults]` has no `{}`: it holds {} (merged key by key into each host's); services and timers are each host's own, under [[hosts.NAME.service]]",
                        key.get_ref(),
                        list(&DEFAULT_KEYS)
                    ),
                );
            }
        }
    }
    let Some(hosts_value) = hosts else {
        diags.error(
            None,
            "the cluster file has no `[hosts.NAME]`: add one table per host, e.g. `[hosts.host-a]`",
        );
        return Some(Cluster {
            path: path.to_path_buf(),
            text: text.to_string(),
            hosts: Vec::new(),
        });
    };
    let mut out = Vec::new();
    if let Some(table) = table_of(hosts_value, "hosts", diags) {
        if table.is_empty() {
            diags.error(
                hosts_value.span(),
                "`hosts` has no host: add one table per host, e.g. `[hosts.host-a]`",
            );
        }
        // In the order the file has them (the parsed table is sorted).
        let mut hosts: Vec<_> = table.iter().collect();
        hosts.sort_by_key(|(name, _)| name.span().start);
        for (name, value) in hosts {
            if let Some(e) = crate::util::names::problem(name.get_ref()) {
                diags.error(name.span(), format!("host name `{}`: {e}", name.get_ref()));
            }
            if let Some(own) = table_of(value, &format!("hosts.{}", name.get_ref()), diags) {
                out.push(host(text, name, own, defaults, diags));
            }
        }
    }
    Some(Cluster {
        path: path.to_path_buf(),
        text: text.to_string(),
        hosts: out,
    })
}

/// `value` as a table, or an error saying it must be one.
fn table_of<'t, 'i>(
    value: &'t Spanned<DeValue<'i>>,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<&'t DeTable<'i>> {
    let table = value.get_ref().as_table();
    if table.is_none() {
        diags.error(
            value.span(),
            format!(
                "`{what}` must be a table, not a {}",
                value.get_ref().type_str()
            ),
        );
    }
    table
}

fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads one `[hosts.NAME]` and renders its config.
fn host(
    text: &str,
    name: &Spanned<toml::de::DeString<'_>>,
    own: &DeTable<'_>,
    defaults: Option<&DeTable<'_>>,
    diags: &mut Diagnostics,
) -> ClusterHost {
    let mut extras = DeTable::new();
    for (key, value) in own {
        let k = key.get_ref().as_ref();
        if !HOST_KEYS.contains(&k) {
            diags.error(
                key.span(),
                format!(
                    "`[hosts.{}]` has no `{k}`: it holds a host config's {} and the cluster's {}",
                    name.get_ref(),
                    list(&HOST_KEYS[1..5]),
                    list(&["address", "sealers", "tokens"])
                ),
            );
        } else if matches!(k, "address" | "sealers" | "tokens") {
            extras.insert(key.clone(), value.clone());
        }
    }
    let extras_span = name.span();
    let extras: Option<HostExtras> =
        config::read_table(diags, Spanned::new(extras_span, DeValue::Table(extras)));
    let at = name.span().start;
    let mut rendered = Rendered::default();
    rendered.comment(
        &format!("host `{}`, derived from the cluster file by `venussup render`: change the cluster file, not this one", name.get_ref()),
        at,
    );
    if let Some(t) = merged(text, at, "host", defaults, own, diags) {
        t.write(text, "host", false, &mut rendered);
    }
    for key in ["service", "timer"] {
        for t in array(text, name.get_ref(), key, own, diags) {
            t.write(text, key, true, &mut rendered);
        }
    }
    if let Some(t) = merged(text, at, "capacity", defaults, own, diags) {
        t.write(text, "capacity", false, &mut rendered);
    }
    let other_hosts_at = own
        .get("capacity")
        .and_then(|c| c.get_ref().as_table())
        .and_then(|c| c.get_key_value("other_hosts"))
        .map(|(_, v)| v.span());
    let extras = extras.unwrap_or(HostExtras {
        address: None,
        sealers: BTreeMap::new(),
        tokens: BTreeMap::new(),
    });
    ClusterHost {
        name: Spanned::new(name.span(), name.get_ref().to_string()),
        address: extras.address,
        sealers: extras.sealers,
        tokens: extras.tokens,
        other_hosts_at,
        rendered,
    }
}

/// `[[hosts.NAME.KEY]]`, each table of it (inline or not).
fn array<'t, 'i>(
    text: &str,
    host: &str,
    key: &str,
    own: &'t DeTable<'i>,
    diags: &mut Diagnostics,
) -> Vec<Table<'t, 'i>> {
    let Some(value) = own.get(key) else {
        return Vec::new();
    };
    let items = match value.get_ref() {
        DeValue::Array(items) if items.iter().all(|i| i.get_ref().is_table()) => items,
        other => {
            diags.error(
                value.span(),
                format!("`{key}` of host `{host}` must be an array of tables written `[[hosts.{host}.{key}]]`, not a {}", other.type_str()),
            );
            return Vec::new();
        }
    };
    items
        .iter()
        .filter_map(|i| {
            i.get_ref()
                .as_table()
                .map(|t| Table::of(text, i.span().start, t))
        })
        .collect()
}

/// `[defaults.KEY]` with `[hosts.NAME.KEY]` merged over it; `None` when
/// neither is there.
fn merged<'t, 'i>(
    text: &str,
    at: usize,
    key: &str,
    defaults: Option<&'t DeTable<'i>>,
    own: &'t DeTable<'i>,
    diags: &mut Diagnostics,
) -> Option<Table<'t, 'i>> {
    let base = defaults
        .and_then(|d| d.get(key))
        .and_then(|v| table_of(v, &format!("defaults.{key}"), diags));
    let over = own.get(key).and_then(|v| table_of(v, key, diags));
    if base.is_none() && over.is_none() {
        return None;
    }
    let mut table = base.map_or_else(|| Table::empty(at), |b| Table::of(text, at, b));
    if let Some(o) = over {
        table.merge(text, o);
    }
    Some(table)
}

#[cfg(test)]
mod tests;
