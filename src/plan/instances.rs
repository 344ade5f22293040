//! Instances: one `[[service]]` that runs as several processes, a worker
//! per GPU or per NUMA node, written once.
//!
//! `instances = N`, `"per-gpu"` or `"per-numa"` expands a service into
//! services `NAME@0`, `NAME@1`, ... before anything else is planned, so
//! every later rule (CPU shares, GPUs, the Venus checks, start order) sees
//! ordinary services. In each copy, `{i}` (its number), `{gpu}` (its GPU's
//! index, `per-gpu`), `{numa}` (its NUMA node: `per-numa`, or its GPU's
//! node) and `{port}` (`port_base + i`) are substituted in the command,
//! the environment's values and the paths; `{{` and `}}` are literal
//! braces, and `${VAR}` is left for the environment. An unknown
//! placeholder is an error at its line and column.
//!
//! Each copy gets ⌊share / n⌋ cores of the service's CPU share (on its
//! NUMA node when it has one), `per-gpu` copies one GPU each, and `after =
//! ["NAME"]` waits for every copy (`"NAME@0"` for one).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use crate::config::values::{CpuSpec, GpuRef, GpuSpec};
use crate::config::{Config, Instance, Instances, ServiceConfig};
use crate::host::gpu::Gpu;
use crate::plan::gpus::{self, Want};
use crate::util::diag::Diagnostics;

/// The placeholders, for messages.
const PLACEHOLDERS: &str = "{i}, {gpu}, {numa}, {port}";

impl Instance {
    /// The value of `{name}` for this copy, or why it has none.
    fn value(&self, name: &str) -> Result<String, String> {
        match name {
            "i" => Ok(self.index.to_string()),
            "gpu" => self.gpu.map(|g| g.to_string()).ok_or_else(|| {
                format!("`{{gpu}}` is the instance's own GPU: it needs `instances = \"per-gpu\"` (`{}` has `instances = {}`)", self.of, quoted(self.per))
            }),
            "numa" => self.numa.map(|n| n.to_string()).ok_or_else(|| match (self.per, self.gpu) {
                (Instances::PerGpu, Some(g)) => format!("`{{numa}}`: this host does not tell the NUMA node of GPU {g} ({}/<bus id>/numa_node)", crate::host::gpu::PCI_DIR),
                _ => format!("`{{numa}}` is the instance's NUMA node: it needs `instances = \"per-numa\"` or `\"per-gpu\"` (`{}` has `instances = {}`)", self.of, quoted(self.per)),
            }),
            "port" => self.port.map(|p| p.to_string()).ok_or_else(|| {
                format!("`{{port}}` is `port_base + {{i}}`: give `{}` a `port_base`, e.g. `port_base = 3456`", self.of)
            }),
            other => Err(format!(
                "unknown placeholder `{{{other}}}`; instances know {PLACEHOLDERS} (write `{{{{` for a literal `{{`)"
            )),
        }
    }
}

fn quoted(per: Instances) -> String {
    match per {
        Instances::Count(n) => n.to_string(),
        other => format!("\"{other}\""),
    }
}

/// A placeholder that could not be substituted: the text to point at
/// (`{foo}`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    pub token: String,
    pub message: String,
}

/// Substitutes `{name}` in `text` with `value(name)`. `{{` and `}}` are
/// literal braces; `${VAR}` and `$$` are left as they are, for the
/// environment expansion that follows.
pub fn substitute(
    text: &str,
    value: impl Fn(&str) -> Result<String, String>,
) -> Result<String, SubstError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['$', '{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("$$") || tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(if tail.starts_with('$') {
                "$$"
            } else {
                &tail[..1]
            });
            rest = &tail[2..];
        } else if let Some(var) = tail.strip_prefix("${") {
            let end = var.find('}').map_or(tail.len(), |e| e + 3);
            out.push_str(&tail[..end]);
            rest = &tail[end..];
        } else if let Some(inner) = tail.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                return Err(SubstError {
                    token: tail.to_string(),
                    message: format!("`{tail}` opens `{{` without closing `}}` (write `{{{{` for a literal `{{`)"),
                });
            };
            let name = &inner[..end];
            let token = format!("{{{name}}}");
            out.push_str(&value(name).map_err(|message| SubstError {
                token: token.clone(),
                message,
            })?);
            rest = &inner[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The names of the copies of each service with `instances`.
type Members = BTreeMap<String, Vec<String>>;

/// `config` with every service that has `instances` replaced by its copies
/// (in place, in order), and every `after` and `share_cpus_with` naming
/// such a service rewritten to name its copies. `gpus` are the host's GPUs
/// as planned; `numa_nodes` its NUMA nodes (`None`: not told). A config
/// without `instances` is itself, not a copy (with 100k services a copy
/// took a fifth of `check`'s memory).
pub fn expand<'c>(
    config: &'c Config,
    gpus: &[Gpu],
    numa_nodes: Option<&[u32]>,
    diags: &mut Diagnostics,
) -> Cow<'c, Config> {
    if config.services.iter().all(|s| s.instances.is_none()) {
        for s in &config.services {
            lone(config, s, diags);
        }
        return Cow::Borrowed(config);
    }
    let mut services = Vec::new();
    let mut members = Members::new();
    for s in &config.services {
        match &s.instances {
            None => {
                lone(config, s, diags);
                services.push(s.clone());
            }
            Some(per) => {
                let copies = copies(
                    config,
                    s,
                    *per.get_ref(),
                    per.span(),
                    gpus,
                    numa_nodes,
                    diags,
                );
                members.insert(
                    s.name.get_ref().clone(),
                    copies.iter().map(|c| c.name.get_ref().clone()).collect(),
                );
                services.extend(copies);
            }
        }
    }
    for s in &mut services {
        s.after = names(&members, &s.after, "after", s.name.get_ref(), diags);
        s.share_cpus_with = names(
            &members,
            &s.share_cpus_with,
            "share_cpus_with",
            s.name.get_ref(),
            diags,
        );
    }
    let mut timers = config.timers.clone();
    for t in &mut timers {
        t.after = names(&members, &t.after, "after", t.name.get_ref(), diags);
    }
    Cow::Owned(Config {
        path: config.path.clone(),
        text: config.text.clone(),
        host: config.host.clone(),
        services,
        timers,
        capacity: config.capacity.clone(),
    })
}

/// A service without `instances`: `port_base` means nothing, and a
/// placeholder in its command is a mistake worth a warning.
fn lone(config: &Config, s: &ServiceConfig, diags: &mut Diagnostics) {
    let name = s.name.get_ref();
    if let Some(p) = &s.port_base {
        diags.error(p.span(), format!("`port_base` of `{name}` gives `{{port}}` to instances; `{name}` has no `instances`"));
    }
    for token in ["{i}", "{gpu}", "{numa}", "{port}"] {
        if s.command.get_ref().iter().any(|a| a.contains(token)) {
            let at = locate(&config.text, s.command.span().start, token);
            diags.warning(at, format!("`{token}` in the command of `{name}` stays as written: placeholders are substituted only in services with `instances`"));
        }
    }
}

/// The copies of one service with `instances`.
fn copies(
    config: &Config,
    s: &ServiceConfig,
    per: Instances,
    per_span: Range<usize>,
    gpus: &[Gpu],
    numa_nodes: Option<&[u32]>,
    diags: &mut Diagnostics,
) -> Vec<ServiceConfig> {
    let name = s.name.get_ref();
    if let Some(c) = &s.cpus {
        let bad = match c.get_ref() {
            CpuSpec::List(_) => Some("a CPU list"),
            CpuSpec::Rest => Some("`rest`"),
            CpuSpec::Share(_) | CpuSpec::All => None,
        };
        if let Some(what) = bad {
            diags.error(c.span(), format!("`{name}` has `instances`, and {what} cannot be split between them; give a share such as \"100%\" (each instance gets an equal part) or \"all\""));
        }
    }
    // (GPU, NUMA node) of each copy.
    let slots: Vec<(Option<u32>, Option<u32>)> = match per {
        Instances::Count(n) => vec![(None, None); n as usize],
        Instances::PerNuma => match numa_nodes {
            Some(nodes) => nodes.iter().map(|&n| (None, Some(n))).collect(),
            None => {
                diags.error(per_span.clone(), format!("`instances = \"per-numa\"` of `{name}`: this host does not tell its NUMA nodes"));
                Vec::new()
            }
        },
        Instances::PerGpu => {
            let (want, problems) = gpus::want(s.gpus.get_ref(), gpus);
            for p in problems {
                diags.error(s.gpus.span(), format!("`gpus` of `{name}`: {p}"));
            }
            let mine: Vec<u32> = match want {
                Want::Auto => gpus.iter().map(|g| g.index).collect(),
                Want::Listed(list) => list,
                Want::None => {
                    diags.error(per_span.clone(), format!("`{name}` has `instances = \"per-gpu\"` and `gpus = \"none\"`: one instance per GPU needs GPUs"));
                    Vec::new()
                }
            };
            if mine.is_empty() && s.gpus.get_ref() == &GpuSpec::Auto {
                diags.error(per_span.clone(), format!("`instances = \"per-gpu\"` of `{name}`: this host has no GPU (state them in `[host] gpus` to plan for another host)"));
            }
            mine.into_iter()
                .map(|g| {
                    (
                        Some(g),
                        gpus.iter().find(|x| x.index == g).and_then(|x| x.numa),
                    )
                })
                .collect()
        }
    };
    let count = slots.len();
    let ports: Vec<Option<u16>> = (0..count)
        .map(|i| {
            let base = s.port_base.as_ref()?;
            u16::try_from(usize::from(*base.get_ref()) + i).ok()
        })
        .collect();
    if let Some(base) = &s.port_base {
        if ports.iter().any(Option::is_none) {
            diags.error(
                base.span(),
                format!(
                    "`port_base = {}` of `{name}`: {count} instances would pass port 65535",
                    base.get_ref()
                ),
            );
        }
    }
    let table_start = config.text[..s.name.span().start]
        .rfind("[[")
        .unwrap_or(s.name.span().start);
    slots
        .into_iter()
        .zip(ports)
        .enumerate()
        .map(|(index, ((gpu, numa), port))| {
            let instance = Instance {
                of: name.clone(),
                index,
                count,
                per,
                gpu,
                numa,
                port,
            };
            let mut copy = Copier {
                text: &config.text,
                table_start,
                instance: &instance,
                diags: &mut *diags,
            }
            .copy(s);
            copy.name = Spanned::new(s.name.span(), format!("{name}@{index}"));
            if let Some(g) = gpu {
                copy.gpus = Spanned::new(s.gpus.span(), GpuSpec::List(vec![GpuRef::Index(g)]));
            }
            copy.instances = None;
            copy.port_base = None;
            copy.instance = Some(instance);
            copy
        })
        .collect()
}

/// Makes one copy of a service with its placeholders substituted,
/// reporting each bad placeholder at its place in the file.
struct Copier<'a> {
    text: &'a str,
    /// Where the service's table starts: fields without a kept place are
    /// looked for from here.
    table_start: usize,
    instance: &'a Instance,
    diags: &'a mut Diagnostics,
}

impl Copier<'_> {
    fn copy(&mut self, s: &ServiceConfig) -> ServiceConfig {
        let mut c = s.clone();
        c.command = self.argv(&s.command);
        c.env = s
            .env
            .iter()
            .map(|(k, v)| (k.clone(), self.text_at(v, k.span().start)))
            .collect();
        c.env_file = s.env_file.as_ref().map(|f| self.path_spanned(f));
        let start = self.table_start;
        c.workdir = s.workdir.as_ref().map(|w| self.path_at(w, start));
        c.requires_mounts = s
            .requires_mounts
            .iter()
            .map(|m| self.path_at(m, start))
            .collect();
        if let Some(ready) = &s.ready {
            let at = ready.span().start;
            let mut r = ready.get_ref().clone();
            r.tcp = r.tcp.map(|t| {
                let address = self.text_at(t.get_ref(), t.span().start);
                if !address.contains('{') && address.parse::<std::net::SocketAddr>().is_err() {
                    self.diags.error(t.span(), format!("`{address}` (`ready.tcp` of `{}@{}`) is not an IP address and port, e.g. \"127.0.0.1:{{port}}\"", self.instance.of, self.instance.index));
                }
                Spanned::new(t.span(), address)
            });
            r.file = r.file.map(|f| self.path_at(&f, at));
            r.command = r.command.map(|cmd| self.argv(&cmd));
            c.ready = Some(Spanned::new(ready.span(), r));
        }
        if let Some(d) = &mut c.drain {
            for cmd in [&mut d.command, &mut d.quiet, &mut d.stop_command] {
                *cmd = cmd.as_ref().map(|x| self.argv(x));
            }
        }
        c
    }

    fn argv(&mut self, cmd: &Spanned<Vec<String>>) -> Spanned<Vec<String>> {
        let at = cmd.span().start;
        let argv = cmd.get_ref().iter().map(|a| self.text_at(a, at)).collect();
        Spanned::new(cmd.span(), argv)
    }

    fn path_spanned(&mut self, p: &Spanned<PathBuf>) -> Spanned<PathBuf> {
        Spanned::new(p.span(), self.path_at(p.get_ref(), p.span().start))
    }

    fn path_at(&mut self, p: &std::path::Path, at: usize) -> PathBuf {
        PathBuf::from(self.text_at(&p.to_string_lossy(), at))
    }

    /// `text` substituted; on a bad placeholder, an error at its first
    /// place in the file from `at` on, and the text as written.
    fn text_at(&mut self, text: &str, at: usize) -> String {
        substitute(text, |name| self.instance.value(name)).unwrap_or_else(|e| {
            let span = locate(self.text, at, &e.token);
            self.diags
                .error(span, format!("`{}`: {}", self.instance.of, e.message));
            text.to_string()
        })
    }
}

/// The place of `token` in `text` from `from` on (else `from` itself).
fn locate(text: &str, from: usize, token: &str) -> Range<usize> {
    text.get(from..)
        .and_then(|t| t.find(token))
        .map_or(from..from, |i| from + i..from + i + token.len())
}

/// `list` with each service that has instances replaced by its copies;
/// `NAME@k` must name one of them.
fn names(
    members: &Members,
    list: &[Spanned<String>],
    key: &str,
    owner: &str,
    diags: &mut Diagnostics,
) -> Vec<Spanned<String>> {
    let mut out = Vec::new();
    for entry in list {
        let n = entry.get_ref();
        if let Some(copies) = members.get(n) {
            out.extend(copies.iter().map(|c| Spanned::new(entry.span(), c.clone())));
            continue;
        }
        if let Some((base, _)) = n.split_once('@') {
            if let Some(copies) = members.get(base).filter(|c| !c.contains(n)) {
                let has = match copies.as_slice() {
                    [] => "no instances on this host".to_string(),
                    [one] => format!("one instance, {one}"),
                    [first, .., last] => format!("{} instances, {first} to {last}", copies.len()),
                };
                diags.error(
                    entry.span(),
                    format!("`{n}` in `{key}` of `{owner}` is not an instance: `{base}` has {has}"),
                );
                continue;
            }
        }
        out.push(entry.clone());
    }
    out
}

#[cfg(test)]
mod tests;
