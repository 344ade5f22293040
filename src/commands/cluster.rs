//! `venussup render --cluster FILE --host NAME` (one host's config from
//! the cluster file) and `venussup check --cluster FILE` (every host and
//! the rules across hosts).

use std::path::Path;

use super::{exit, print_stdout};
use crate::cluster::{self, Cluster};
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

/// `venussup render`: prints `host`'s config, or the errors of the cluster
/// file and of that host's config (exit 1, nothing printed).
pub fn render(path: &Path, host: &str) -> u8 {
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

/// `venussup check --cluster`: every host's config and the rules across
/// hosts.
pub fn check(path: &Path, _facts: Option<&Path>) -> u8 {
    let (cluster, mut diags) = load(path);
    if let Some(cluster) = &cluster {
        for h in &cluster.hosts {
            cluster.config(h, &mut diags);
        }
    }
    let items = diags.into_sorted();
    let count = |sev| items.iter().filter(|d| d.severity == sev).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    for d in &items {
        eprintln!("{d}");
    }
    if errors == 0 {
        eprintln!("cluster OK ({warnings} warning(s))");
        exit::OK
    } else {
        eprintln!("cluster invalid: {errors} error(s), {warnings} warning(s)");
        exit::FAILURE
    }
}
