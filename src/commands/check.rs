//! `venussup check`: validate the config and print the resolved plan.
//!
//! Exit 0 when the config is valid (warnings allowed), 1 when it has
//! errors. Text goes to stdout, diagnostics to stderr; with `--json` one
//! document on stdout holds both.

use std::path::Path;

use serde::Serialize;

use super::exit;
use crate::config;
use crate::diag::{Diagnostic, Severity};
use crate::fsroot::FsRoot;
use crate::plan::{self, render, Host, Plan};

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    errors: Vec<&'a Diagnostic>,
    warnings: Vec<&'a Diagnostic>,
    plan: Option<Plan>,
}

pub fn run(config_path: &Path, fs_root: &FsRoot, json: bool) -> u8 {
    let (config, mut diags) = config::load(config_path);
    let plan = config.map(|c| plan::resolve(&c, &Host::probe(fs_root), &mut diags));
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
            plan: shown,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("venussup check: cannot write JSON: {e}");
                return exit::FAILURE;
            }
        }
    } else {
        if let Some(p) = &shown {
            print!("{}", render::text(p));
        }
        for d in &items {
            eprintln!("{d}");
        }
        let (errors, warnings) = (by(Severity::Error).count(), by(Severity::Warning).count());
        if valid {
            eprintln!("config OK ({warnings} warning{})", plural(warnings));
        } else {
            eprintln!(
                "config invalid: {errors} error{}, {warnings} warning{}; nothing was started",
                plural(errors),
                plural(warnings)
            );
        }
    }
    if valid {
        exit::OK
    } else {
        exit::FAILURE
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
