//! `venussup check`: validate the config and print the resolved plan.
//!
//! Exit 0 when the config is valid (warnings allowed), 1 when it has
//! errors. Text goes to stdout, diagnostics to stderr; with `--json` one
//! document on stdout holds both.

use std::path::Path;

use serde::Serialize;

use super::{exit, print_stdout};
use crate::checks::venus;
use crate::config;
use crate::host::Host;
use crate::plan::{self, render, Plan};
use crate::util::diag::{Diagnostic, Severity};
use crate::util::fsroot::FsRoot;

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    errors: Vec<&'a Diagnostic>,
    warnings: Vec<&'a Diagnostic>,
    notes: Vec<&'a Diagnostic>,
    plan: Option<Plan>,
}

pub fn run(config_path: &Path, fs_root: &FsRoot, json: bool) -> u8 {
    let (config, mut diags) = config::load(config_path);
    let plan = config.map(|c| {
        let host = Host::probe(fs_root);
        let plan = plan::resolve(&c, &host, &mut diags);
        let capacity = c.capacity.as_ref().and_then(|cap| {
            super::capacity::assess(Some((&c, &plan)), fs_root, &[], None)
                .map_err(|e| {
                    diags.warning(
                        cap.sector_size.span(),
                        format!("the capacity plan could not be computed here ({e}); MaxSealingSectors was not checked against it"),
                    );
                })
                .ok()
        });
        venus::check(&c, &plan, &host, capacity.as_ref().map(|a| &a.capacity), &mut diags);
        plan
    });
    let valid = !diags.has_errors();
    let items = diags.into_sorted();
    let by = |sev| {
        items
            .iter()
            .filter(move |d: &&Diagnostic| d.severity == sev)
    };
    // An invalid config has no plan to show: it would be a guess.
    let shown = plan.filter(|_| valid).map(|p| render::redacted(&p));
    if json {
        let report = Report {
            valid,
            errors: by(Severity::Error).collect(),
            warnings: by(Severity::Warning).collect(),
            notes: by(Severity::Note).collect(),
            plan: shown,
        };
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot write JSON: {e}"))
            .and_then(|s| print_stdout(&(s + "\n")));
        if let Err(e) = written {
            eprintln!("venussup check: {e}");
            return exit::FAILURE;
        }
    } else {
        if let Some(p) = &shown {
            if let Err(e) = print_stdout(&render::text(p)) {
                eprintln!("venussup check: {e}");
                return exit::FAILURE;
            }
        }
        for d in &items {
            eprintln!("{d}");
        }
        let count = |sev, word| {
            let n = by(sev).count();
            format!("{n} {word}{}", if n == 1 { "" } else { "s" })
        };
        let (errors, warnings, notes) = (
            count(Severity::Error, "error"),
            count(Severity::Warning, "warning"),
            count(Severity::Note, "note"),
        );
        if valid {
            eprintln!("config OK ({warnings}, {notes})");
        } else {
            eprintln!("config invalid: {errors}, {warnings}, {notes}; nothing was started");
        }
    }
    if valid {
        exit::OK
    } else {
        exit::FAILURE
    }
}
