//! `venussup check`: validate the config and print the resolved plan.
//!
//! Exit 0 when the config is valid (warnings allowed), 1 when it has
//! errors. Text goes to stdout, diagnostics to stderr; with `--json` one
//! document on stdout holds both.

use std::path::Path;

use serde::Serialize;

use super::{exit, print_stdout};
use crate::checks::{self, listen, secrets, venus};
use crate::config;
use crate::host::Host;
use crate::plan::{self, render, Plan};
use crate::util::diag::{Diagnostic, Diagnostics, Severity};
use crate::util::fsroot::FsRoot;

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    errors: Vec<&'a Diagnostic>,
    warnings: Vec<&'a Diagnostic>,
    notes: Vec<&'a Diagnostic>,
    plan: Option<Plan>,
    /// The capacity plan and memory budget, with `[capacity]`.
    capacity: Option<super::capacity::Assessment>,
}

pub fn run(config_path: &Path, fs_root: &FsRoot, json: bool) -> u8 {
    let (config, mut diags) = config::load(config_path);
    let mut assessed = None;
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
        if let Some(a) = &capacity {
            checks::capacity::check(&c, &plan, &a.capacity, a.wasted_hugepages(), &mut diags);
        }
        listen::check(&c, &plan, &mut diags);
        assessed = capacity;
        secrets::check(&c, &host, &mut diags);
        control_access(&c, config_path, fs_root, &mut diags);
        folders(&c, fs_root, &mut diags);
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
    let shown = plan.filter(|_| valid).map(render::redacted);
    if json {
        let report = Report {
            valid,
            errors: by(Severity::Error).collect(),
            warnings: by(Severity::Warning).collect(),
            notes: by(Severity::Note).collect(),
            plan: shown,
            capacity: assessed,
        };
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot write JSON: {e}"))
            .and_then(|s| print_stdout(&(s + "\n")));
        if let Err(e) = written {
            eprintln!("venussup check: {e}");
            return exit::FAILURE;
        }
    } else {
        let text = shown.as_ref().map(render::text).into_iter();
        let capacity = assessed.as_ref().map(super::capacity::text).into_iter();
        for part in text.chain(capacity) {
            if let Err(e) = print_stdout(&part) {
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

/// The folders venussup writes as root must be nobody else's (see
/// `sys::folder`): `run` refuses to start otherwise, so `check` says it
/// first. Missing ones are checked as far as they exist.
fn folders(c: &config::Config, fs_root: &FsRoot, diags: &mut Diagnostics) {
    for f in crate::runtime::state::folders(&c.host) {
        if let Err(e) = crate::sys::folder::check(f.what, &fs_root.path(&f.path)) {
            if f.own {
                diags.error(None, format!("{e} `venussup run` refuses to start."));
            } else {
                diags.warning(None, e.to_string());
            }
        }
    }
}

/// Says what the members of `[host] control_group` (the Zabbix agent) will
/// reach: the control socket, through the state folder venussup makes
/// `0710 root:GROUP`, and nothing else in it; or why they will not (no such
/// group, a parent folder they cannot pass, a config they cannot read).
fn control_access(
    c: &config::Config,
    config_path: &Path,
    fs_root: &FsRoot,
    diags: &mut Diagnostics,
) {
    let state_dir = &c.host.state_dir;
    let socket = state_dir.join(crate::control::SOCKET_NAME);
    let Some(group) = &c.host.control_group else {
        diags.note(
            None,
            format!(
                "control socket {}: root only; set [host] control_group (e.g. \"zabbix\") to let the Zabbix agent reach it",
                socket.display()
            ),
        );
        return;
    };
    let name = group.get_ref();
    let gid = match crate::host::users::group_id(name) {
        Ok(Some(g)) => g.as_raw(),
        Ok(None) => {
            diags.warning(
                group.span(),
                format!("control_group `{name}` does not exist on this host: only root will reach the control socket {}", socket.display()),
            );
            return;
        }
        Err(e) => {
            diags.warning(group.span(), format!("cannot look up control_group `{name}` ({e}): only root may reach the control socket"));
            return;
        }
    };
    let blocked = state_dir.ancestors().skip(1).find_map(|dir| {
        let meta = std::fs::metadata(fs_root.path(dir)).ok()?;
        (!group_may_pass(&meta, gid)).then(|| (dir.to_path_buf(), meta))
    });
    if let Some((dir, meta)) = blocked {
        use std::os::unix::fs::MetadataExt;
        diags.warning(
            group.span(),
            format!(
                "members of `{name}` cannot reach the control socket {}: they may not pass through {} (mode {:o}, owner {}:{}); give it o+x, or make `{name}` its group with g+x",
                socket.display(),
                dir.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        );
        return;
    }
    diags.note(
        group.span(),
        format!(
            "members of `{name}` (gid {gid}) will reach the control socket {} (0660 root:{name}) through the state folder (0710 root:{name}: they may pass, not list), and nothing else there: every other file venussup keeps in it is root-only",
            socket.display()
        ),
    );
    // `venussup zabbix` finds the socket through the config's state_dir.
    let default = crate::config::default_state_dir();
    if *state_dir != default {
        let readable = std::fs::metadata(config_path).is_ok_and(|m| group_may_read(&m, gid));
        if !readable {
            diags.warning(
                group.span(),
                format!(
                    "members of `{name}` cannot read {}, where `venussup zabbix` finds state_dir: they would look in {} instead; make the config readable by the group (e.g. chgrp {name}, mode 0640)",
                    config_path.display(),
                    default.display()
                ),
            );
        }
    }
}

/// Whether a member of group `gid` (not its owner) may pass through the
/// folder `meta`.
fn group_may_pass(meta: &std::fs::Metadata, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.mode() & 0o001 != 0 || (meta.gid() == gid && meta.mode() & 0o010 != 0)
}

/// Whether a member of group `gid` (not its owner) may read the file `meta`.
fn group_may_read(meta: &std::fs::Metadata, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.mode() & 0o004 != 0 || (meta.gid() == gid && meta.mode() & 0o040 != 0)
}
