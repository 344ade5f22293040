//! `venussup render --cluster FILE --host NAME` (one host's config from
//! the cluster file) and `venussup check --cluster FILE` (every host and
//! the rules across hosts).

use std::fmt::Write as _;
use std::path::Path;

use super::{exit, print_stdout};
mod facts;

use crate::checks::listen;
use crate::cluster::{self, rules, Cluster, ClusterHost};
use crate::config::Config;
use crate::plan;
use crate::util::diag::{Diagnostics, Severity};

/// Reads and parses the cluster file; the diagnostics say why not.
fn load(path: &Path) -> (Option<Cluster>, Diagnostics) {
    let text = match std::fs::read(path).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            let mut diags = Diagnostics::new(path, "");
            diags.error(
                None,
                format!(
                    "the cluster file is not UTF-8 (byte {} is not); TOML files are UTF-8 text",
                    e.utf8_error().valid_up_to()
                ),
            );
            return (None, diags);
        }
        Err(e) => {
            let mut diags = Diagnostics::new(path, "");
            diags.error(None, format!("cannot read the cluster file: {e}"));
            return (None, diags);
        }
    };
    let mut diags = Diagnostics::new(path, &text);
    let cluster = cluster::parse(path, &text, &mut diags);
    (cluster, diags)
}

/// Prints the diagnostics, errors first; whether there was an error.
fn report(diags: Diagnostics) -> bool {
    let failed = diags.has_errors();
    for d in diags.into_sorted() {
        eprintln!("{d}");
    }
    failed
}

/// `venussup render`: prints `host`'s config (this machine's hostname when
/// `None`), or the errors of the cluster file and of that host's config
/// (exit 1, nothing printed).
pub fn render(path: &Path, host: Option<String>) -> u8 {
    let host = match host {
        Some(h) => h,
        None => match nix::unistd::gethostname() {
            Ok(h) => h.to_string_lossy().into_owned(),
            Err(e) => {
                eprintln!("venussup render: cannot read this machine's hostname ({e}); name the host with --host");
                return exit::FAILURE;
            }
        },
    };
    let host = host.as_str();
    let (cluster, mut diags) = load(path);
    let Some(cluster) = cluster else {
        report(diags);
        return exit::FAILURE;
    };
    let Some(h) = cluster.host(host) else {
        let at = cluster.hosts.last().map(|h| h.name.span());
        diags.error(
            at,
            format!("no host `{host}` in the cluster file (its hosts: {}); add `[hosts.{host}]` or pick one of them", cluster.names()),
        );
        report(diags);
        return exit::FAILURE;
    };
    let config = cluster.config(h, &mut diags);
    if report(diags) || config.is_none() {
        eprintln!("venussup render: `{host}` was not rendered: fix the errors above");
        return exit::FAILURE;
    }
    match print_stdout(&h.rendered.text) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("venussup render: {e}");
            exit::FAILURE
        }
    }
}

/// `venussup check --cluster`: every host's config, each host's plan
/// against its hardware when `facts` has it, and the rules across hosts.
pub fn check(path: &Path, facts: Option<&Path>) -> u8 {
    let (cluster, mut diags) = load(path);
    if let Some(cluster) = &cluster {
        let configs: Vec<Option<Config>> = cluster
            .hosts
            .iter()
            .map(|h| cluster.config(h, &mut diags))
            .collect();
        let mut members = Vec::new();
        for (h, config) in cluster.hosts.iter().zip(&configs) {
            let plan = facts.and_then(|dir| {
                let dir = dir.join(h.name.get_ref());
                if let Some(c) = config {
                    on_hardware(cluster, h, c, &dir, &mut diags);
                }
                facts::recommended(&dir)
                    .map_err(|e| {
                        diags.error(h.name.span(), format!("host `{}`: {e}", h.name.get_ref()))
                    })
                    .ok()
            });
            members.push(rules::Member {
                host: h,
                config: config.as_ref(),
                plan,
            });
        }
        let links = rules::check(&members, &mut diags);
        let mut text = format!("cluster {}: hosts {}\n", path.display(), cluster.names());
        for l in &links {
            let _ = writeln!(text, "{l}");
        }
        if let Err(e) = print_stdout(&text) {
            eprintln!("venussup check: {e}");
            return exit::FAILURE;
        }
    }
    let items = diags.into_sorted();
    let count = |sev, word| {
        let n = items.iter().filter(|d| d.severity == sev).count();
        format!("{n} {word}{}", if n == 1 { "" } else { "s" })
    };
    for d in &items {
        eprintln!("{d}");
    }
    let errors = count(Severity::Error, "error");
    let warnings = count(Severity::Warning, "warning");
    if items.iter().any(|d| d.severity == Severity::Error) {
        eprintln!("cluster invalid: {errors}, {warnings}");
        exit::FAILURE
    } else {
        eprintln!("cluster OK ({warnings})");
        exit::OK
    }
}

/// `host`'s plan against the hardware of `dir/topology.json`: the CPU
/// placement and the worker probes, as `check` does on the host itself.
fn on_hardware(
    cluster: &Cluster,
    h: &ClusterHost,
    config: &Config,
    dir: &Path,
    diags: &mut Diagnostics,
) {
    let host = match facts::host(dir) {
        Ok(host) => host,
        Err(e) => {
            diags.error(h.name.span(), format!("host `{}`: {e}", h.name.get_ref()));
            return;
        }
    };
    let mut own = Diagnostics::new(&cluster.path, &h.rendered.text);
    let plan = plan::resolve(config, &host, &mut own);
    listen::check(config, &plan, &mut own);
    cluster.carry(h, own, diags);
}
