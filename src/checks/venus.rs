//! Venus-aware checks: the mistakes operators make with venus-sealer and
//! venus-worker, caught before anything starts. Each message says what is
//! wrong, where, and the fix.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use super::tasks;
use crate::capacity::Capacity;
use crate::config::values::Limit;
use crate::config::{Config, Role, ServiceConfig, ServiceKind};
use crate::host::Host;
use crate::plan::gpus;
use crate::plan::{Plan, ServicePlan};
use crate::util::diag::Diagnostics;

/// venus-worker refuses to start with a lower soft `RLIMIT_NOFILE`.
pub const WORKER_MIN_NOFILE: u64 = 100_000;
/// venus-worker's `--listen` default.
const WORKER_DEFAULT_LISTEN: &str = "0.0.0.0:3456";
const WORKER_DEFAULT_REPO: &str = "~/.venusworker";
const SEALER_DEFAULT_REPO: &str = "~/.venussealer";

/// The value of `--name` in an argv: `--name=V`, `--name V`, or `"true"`
/// for a bare `--name` (Go's flag packages accept one or two dashes).
pub fn flag_value<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    argv.iter().enumerate().find_map(|(i, arg)| {
        let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
        if let Some(v) = bare.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v);
        }
        if bare != name {
            return None;
        }
        match argv.get(i + 1) {
            Some(next) if !next.starts_with('-') && next != "true" && next != "false" => {
                Some(next.as_str())
            }
            _ => Some("true"),
        }
    })
}

pub(super) fn flag_on(argv: &[String], name: &str) -> bool {
    flag_value(argv, name).is_none_or(|v| v != "false")
}

/// The span of `key` in the service's own `env`, else of its name.
pub(super) fn env_span(s: &ServiceConfig, key: &str) -> Range<usize> {
    s.env
        .keys()
        .find(|k| k.get_ref() == key)
        .map_or_else(|| s.name.span(), |k| k.span())
}

/// The repo of a service (`--repo`, else `var`, else `default`: urfave/cli
/// applies a flag's env var first and the command line over it), with a
/// leading `~/` expanded from its `HOME` (root's when unset), as Venus
/// expands it (go-homedir).
fn repo(p: &ServicePlan, var: &str, default: &str) -> String {
    let repo = flag_value(&p.argv, "repo")
        .map(str::to_string)
        .or_else(|| p.env.get(var).cloned())
        .unwrap_or_else(|| default.to_string());
    match repo.strip_prefix("~/") {
        Some(rest) => {
            let home = p.env.get("HOME").map_or("/root", String::as_str);
            format!("{}/{rest}", home.trim_end_matches('/'))
        }
        None => repo,
    }
}

/// A path as the kernel resolves it, spelled one way: `//`, `.` parts and
/// a trailing `/` dropped (`/r/a/`, `/r//a` and `/r/./a` are `/r/a`). `..`
/// is kept: through a symlink it is not the parent folder.
pub fn lexical(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    match (path.starts_with('/'), joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

fn port(listen: &str) -> (&str, &str) {
    listen.rsplit_once(':').unwrap_or(("0.0.0.0", listen))
}

/// An address that listens on every interface: a port on it collides with
/// the same port on any other address.
fn any_address(host: &str) -> bool {
    host.is_empty() || host == "0.0.0.0" || host == "[::]"
}

/// A service of the config with (one copy of) its plan.
pub(super) type Pair<'a> = (&'a ServiceConfig, &'a ServicePlan);

/// Runs every Venus-aware check over the config and its plan.
pub fn check(
    config: &Config,
    plan: &Plan,
    host: &Host,
    capacity: Option<&Capacity>,
    diags: &mut Diagnostics,
) {
    let pairs = pairs(config, plan);
    for (s, p) in &pairs {
        environment(s, p, diags);
        super::sdr::settings(s, p, diags);
        multicore_sdr(s, p, diags);
        super::gpus::check(s, p, diags);
    }
    let workers: Vec<_> = pairs
        .iter()
        .filter(|(s, _)| s.role == Role::Worker && s.kind == ServiceKind::Daemon)
        .collect();
    // Flags and limits are the same in every copy of a service: said once.
    let mut seen = std::collections::BTreeSet::new();
    for (s, p) in workers
        .iter()
        .filter(|(s, _)| seen.insert(s.name.get_ref()))
    {
        tasks::worker_tasks(s, p, diags);
        if let Limit::Value(n) = p.limits.nofile {
            if n < WORKER_MIN_NOFILE {
                let span = if s.limits.nofile.span().is_empty() {
                    s.name.span()
                } else {
                    s.limits.nofile.span()
                };
                diags.error(span, format!("`{}` would get nofile {n}: venus-worker refuses to start below {WORKER_MIN_NOFILE}; raise `limits.nofile` (default 1048576)", s.name.get_ref()));
            }
        }
    }
    shared_repos(&workers, diags);
    shared_ports(&workers, diags);
    for (s, p) in sealers(config, plan) {
        if let Some((path, table)) = read_sealer_config(s, p, host, diags) {
            max_sealing_sectors(s, &path, &table, capacity, diags);
            tasks::storage_allows(s, &path, &table, diags);
        }
    }
    super::storage::check(config, plan, host, capacity, diags);
}

/// Each worker whose repo an earlier worker already has, reported at the
/// later one against the first: one pass with a map, not every pair (100k
/// services are checked in well under a second).
fn shared_repos(workers: &[&Pair<'_>], diags: &mut Diagnostics) {
    let mut first: HashMap<String, &ServicePlan> = HashMap::new();
    for (b, pb) in workers {
        let rb = lexical(&repo(pb, "VENUS_WORKER_PATH", WORKER_DEFAULT_REPO));
        let Some(pa) = first.get(&rb) else {
            first.insert(rb, pb);
            continue;
        };
        let each = if pb.instance.is_some() {
            " (with `instances`: `{i}` in it, e.g. VENUS_WORKER_PATH = \"/var/lib/venus/worker{i}\")"
        } else {
            ""
        };
        diags.error(b.name.span(), format!("`{}` and `{}` share the worker repo {rb}; each worker needs its own (set VENUS_WORKER_PATH in its `env`){each}", pa.name, pb.name));
    }
}

/// The earlier workers on one port: the first of all, the first on an
/// any-address (`0.0.0.0`, `[::]`, none), the first on each address.
#[derive(Default)]
struct OnPort<'a> {
    first: Option<(usize, &'a ServicePlan)>,
    any: Option<(usize, &'a ServicePlan)>,
    by_host: HashMap<&'a str, (usize, &'a ServicePlan)>,
}

/// Each worker whose `--listen` collides with an earlier one's (the same
/// port on the same address, or either on any address), reported at the
/// later one against the first it collides with: one pass, grouped by port.
fn shared_ports(workers: &[&Pair<'_>], diags: &mut Diagnostics) {
    let mut ports: HashMap<&str, OnPort<'_>> = HashMap::new();
    for (i, (b, pb)) in workers.iter().enumerate() {
        let lb = flag_value(&pb.argv, "listen").unwrap_or(WORKER_DEFAULT_LISTEN);
        let (host, port_b) = port(lb);
        let on = ports.entry(port_b).or_default();
        let partner = if any_address(host) {
            on.first
        } else {
            [on.any, on.by_host.get(host).copied()]
                .into_iter()
                .flatten()
                .min_by_key(|(k, _)| *k)
        };
        on.first.get_or_insert((i, pb));
        if any_address(host) {
            on.any.get_or_insert((i, pb));
        }
        on.by_host.entry(host).or_insert((i, pb));
        let Some((_, pa)) = partner else { continue };
        let la = flag_value(&pa.argv, "listen").unwrap_or(WORKER_DEFAULT_LISTEN);
        let each = if pb.instance.is_some() {
            " (with `instances`: `--listen=0.0.0.0:{port}` and a `port_base`)"
        } else {
            ""
        };
        diags.error(b.command.span(), format!("`{}` listens on {lb} and `{}` on {la}: the second cannot bind; give each worker its own `--listen` port (venus-worker's default is {WORKER_DEFAULT_LISTEN}){each}", pb.name, pa.name));
    }
}

fn environment(s: &ServiceConfig, p: &ServicePlan, diags: &mut Diagnostics) {
    let name = &p.name;
    let gpu = &p.gpus;
    let gets_gpu = !gpu.devices.is_empty();
    if gpu.replaced.contains_key("BELLMAN_NO_GPU")
        && (gets_gpu || gpus::wants_gpu(s.gpus.get_ref(), &s.tasks, gpus::gpu_builders_on(&p.env)))
    {
        diags.error(env_span(s, "BELLMAN_NO_GPU"), format!("`{name}` is meant to use a GPU, but BELLMAN_NO_GPU disables it whatever its value (even 0); remove it"));
    }
    for key in ["CUDA_VISIBLE_DEVICES", "TMPDIR"] {
        let (Some(old), Some(new)) = (gpu.replaced.get(key), p.env.get(key)) else {
            continue;
        };
        if old != new {
            let why = if key == "TMPDIR" {
                format!(
                    "every service sharing its GPU ({}) uses this folder, where bellperson keeps its GPU locks",
                    gpu.shared_with
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                "venussup sets it from `gpus`; remove it and choose GPUs with `gpus`".to_string()
            };
            diags.warning(
                env_span(s, key),
                format!("{key}={old} of `{name}` is replaced with {key}={new}: {why}"),
            );
        }
    }
    if p.env.contains_key("TMP_DIR") {
        diags.warning(env_span(s, "TMP_DIR"), format!("TMP_DIR has no effect on `{name}`: the GPU lock files live in TMPDIR; rename it to TMPDIR"));
    }
    if p.env.contains_key("FIL_PROOFS_MAXIMIZE_CACHING") {
        diags.note(env_span(s, "FIL_PROOFS_MAXIMIZE_CACHING"), format!("FIL_PROOFS_MAXIMIZE_CACHING (set for `{name}`) is no longer read by the proofs library (removed in 2020); harmless, does nothing"));
    }
}

/// A PreCommit1 service with multicore SDR needs its cores in L3 groups as
/// the proofs library sees them: it splits the cores it is given into one
/// equal run per L3 cache (asserting they divide evenly) and runs each
/// sector's SDR unit of `FIL_PROOFS_MULTICORE_SDR_PRODUCERS + 1` cores in
/// one run. So: the same number of cores from every L3 group, at least a
/// unit each, in one NUMA node.
fn multicore_sdr(s: &ServiceConfig, p: &ServicePlan, diags: &mut Diagnostics) {
    let Some(cpu) = &p.cpus else { return };
    let (Some(unit), Some(span)) = (cpu.sdr_unit, &cpu.span) else {
        return;
    };
    let at = s.cpus.as_ref().map_or_else(|| s.name.span(), |c| c.span());
    let name = &p.name;
    let head = format!("`{name}` runs PreCommit1 with FIL_PROOFS_USE_MULTICORE_SDR=1");
    if !span.l3_known {
        diags.note(at, format!("{head}; this host does not tell its L3 caches, so its CPUs could not be checked against the multicore-SDR rule"));
        return;
    }
    let largest_group = span.l3.iter().map(|u| u.of).max().unwrap_or(0);
    if !span.even() {
        let takes: Vec<String> = span
            .l3
            .iter()
            .map(|u| format!("{} of group {}", u.cores, u.group))
            .collect();
        diags.warning(at.clone(), format!(
            "{head}, but its cores are uneven across L3 groups ({}): the proofs library splits the cores it sees into one equal run per L3 cache (and panics when they do not divide), so SDR units straddle caches; give it whole L3 groups (a multiple of {largest_group} cores) or the same number of cores from each group",
            takes.join(", ")
        ));
    } else if span.min_per_group() < unit.min(largest_group) {
        diags.warning(at.clone(), format!(
            "{head}, but it gets only {} core{} per L3 group, fewer than one SDR unit ({unit} = FIL_PROOFS_MULTICORE_SDR_PRODUCERS + 1)",
            span.min_per_group(),
            if span.min_per_group() == 1 { "" } else { "s" }
        ));
    }
    if span.nodes > 1 {
        let nodes = span
            .numa
            .as_ref()
            .map_or("?".to_string(), ToString::to_string);
        if span.cores <= span.largest_node {
            diags.warning(at, format!("{head}, but its {} cores span NUMA nodes {nodes} though they would fit in one ({} cores); SDR then reads memory across nodes", span.cores, span.largest_node));
        } else {
            diags.note(at, format!("{head}; its {} cores span NUMA nodes {nodes} because one node has {}: for the fastest PreCommit1, run one worker per NUMA node", span.cores, span.largest_node));
        }
    }
}

/// Reads the sealer's own `config.toml` (from `VENUS_SEALER_PATH` or
/// `--repo`, under the host's fs root); a note when it cannot be read here.
fn read_sealer_config(
    s: &ServiceConfig,
    p: &ServicePlan,
    host: &Host,
    diags: &mut Diagnostics,
) -> Option<(PathBuf, toml::Table)> {
    let name = s.name.get_ref();
    let repo = PathBuf::from(repo(p, "VENUS_SEALER_PATH", SEALER_DEFAULT_REPO));
    let path = host.fs_root.path(repo.join("config.toml"));
    let Ok(text) = host.lookups.read_file(&path) else {
        diags.note(s.name.span(), format!("the config.toml of `{name}` ({}) is not readable here; its MaxSealingSectors and [Storage] Allow* were not checked", path.display()));
        return None;
    };
    match text.parse() {
        Ok(t) => Some((path, t)),
        Err(e) => {
            let e: toml::de::Error = e;
            diags.error(
                s.name.span(),
                format!("{}: not valid TOML: {}", path.display(), e.message()),
            );
            None
        }
    }
}

pub(super) fn section<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Table> {
    table.get(key).and_then(toml::Value::as_table)
}

/// `[Sealing] MaxSealingSectors`. venus-sealer checks it only when above 0
/// (`storage-sealing/garbage.go` `PledgeSector`; its default is 0,
/// `config/default_config.go`), so 0 is no limit; and it counts every
/// sealing sector of the sealer, on every host, in every state from
/// AddPiece to finalize (`types/sector_state.go` `toStatState`,
/// `types/stats.go` `curSealingLocked`), so it is compared with this
/// host's plan plus `[capacity] other_hosts`.
fn max_sealing_sectors(
    s: &ServiceConfig,
    path: &std::path::Path,
    table: &toml::Table,
    capacity: Option<&Capacity>,
    diags: &mut Diagnostics,
) {
    let max = section(table, "Sealing")
        .and_then(|t| t.get("MaxSealingSectors"))
        .and_then(toml::Value::as_integer);
    let set_it = capacity.and_then(|c| c.sealer_wide).map_or_else(
        || "set it to the sectors your hosts hold (venussup plan)".to_string(),
        |n| format!("set it to {n} (venussup plan)"),
    );
    let no_limit = "venus-sealer checks the limit only when it is above 0, so pledges never stop and memory and seal disk run out";
    match max {
        Some(0) => diags.error(s.name.span(), format!(
            "{}: [Sealing] MaxSealingSectors = 0 means no limit: {no_limit}; {set_it}",
            path.display()
        )),
        None => diags.warning(s.name.span(), format!(
            "{}: [Sealing] MaxSealingSectors is not set, and venus-sealer's default is 0, no limit: {no_limit}; {set_it}",
            path.display()
        )),
        Some(n) => {
            let Some((c, wide)) = capacity.and_then(|c| Some((c, c.sealer_wide?))) else {
                return;
            };
            if u64::try_from(n).is_ok_and(|n| n > wide) {
                let others = if c.other_hosts > 0 {
                    format!(" + {} on other hosts ([capacity] other_hosts) = {wide}", c.other_hosts)
                } else {
                    "; if other hosts seal for this sealer, give their sectors in [capacity] other_hosts".to_string()
                };
                diags.warning(s.name.span(), format!(
                    "{}: [Sealing] MaxSealingSectors = {n} is above the capacity plan: it counts every sealing sector of the sealer on every host, and this host holds {} ({} fit, bound by {}){others}; {set_it}",
                    path.display(), wide - c.other_hosts, c.fit, c.binding
                ));
            }
        }
    }
}

/// Each planned service with the `[[service]]` it comes from (a service
/// with `instances` comes with each of its copies), in the file's order.
pub(super) fn pairs<'a>(config: &'a Config, plan: &'a Plan) -> Vec<Pair<'a>> {
    let mut copies: HashMap<&str, Vec<&ServicePlan>> = HashMap::new();
    for p in &plan.services {
        let of = p
            .instance
            .as_ref()
            .map_or(p.name.as_str(), |i| i.of.as_str());
        copies.entry(of).or_default().push(p);
    }
    config
        .services
        .iter()
        .flat_map(|s| {
            copies
                .get(s.name.get_ref().as_str())
                .into_iter()
                .flatten()
                .map(move |p| (s, *p))
        })
        .collect()
}

/// The sealers of `config` with their plans.
fn sealers<'a>(
    config: &'a Config,
    plan: &'a Plan,
) -> impl Iterator<Item = (&'a ServiceConfig, &'a ServicePlan)> {
    pairs(config, plan)
        .into_iter()
        .filter(|(s, _)| s.role == Role::Sealer)
}

/// Only the checks against a capacity plan (for `venussup plan`).
pub fn check_capacity(
    config: &Config,
    plan: &Plan,
    host: &Host,
    capacity: &Capacity,
    diags: &mut Diagnostics,
) {
    for (s, p) in sealers(config, plan) {
        if let Some((path, table)) = read_sealer_config(s, p, host, diags) {
            max_sealing_sectors(s, &path, &table, Some(capacity), diags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn paths_are_compared_as_one_spelling() {
        for (given, normal) in [
            ("/r/a/", "/r/a"),
            ("/r//a", "/r/a"),
            ("/r/./a/.", "/r/a"),
            ("/", "/"),
            ("//", "/"),
            ("~/.venusworker/", "~/.venusworker"),
            ("./", "."),
            ("/r/../a", "/r/../a"),
        ] {
            assert_eq!(lexical(given), normal, "{given}");
        }
    }

    #[test]
    fn flags_in_every_spelling() {
        let argv = v(&[
            "w",
            "run",
            "--listen=0.0.0.0:3457",
            "-commit=false",
            "--repo",
            "/r",
            "--no-local-storage",
        ]);
        assert_eq!(flag_value(&argv, "listen"), Some("0.0.0.0:3457"));
        assert_eq!(flag_value(&argv, "commit"), Some("false"));
        assert_eq!(flag_value(&argv, "repo"), Some("/r"));
        assert_eq!(flag_value(&argv, "no-local-storage"), Some("true"));
        assert_eq!(flag_value(&argv, "unseal"), None);
        assert!(flag_on(&argv, "unseal") && !flag_on(&argv, "commit"));
    }

    /// Host A's sealer checked against its own `config.toml`, which the
    /// in-memory host holds under a simulated fs root.
    #[test]
    fn the_sealers_config_toml_is_read_under_the_hosts_fs_root() {
        use crate::host::lookups::InMemory;
        use crate::util::diag::Severity;
        use crate::util::fsroot::FsRoot;
        use std::path::Path;

        let path = Path::new("/etc/venussup/venussup.toml");
        let text = include_str!("../../examples/host-a.toml");
        let diagnose = |host: &Host| {
            let mut diags = Diagnostics::new(path, text);
            let config = crate::config::parse(path, text, &mut diags).unwrap();
            let plan = crate::plan::resolve(&config, host, &mut diags);
            let mut found = Diagnostics::new(path, text);
            check(&config, &plan, host, None, &mut found);
            found.into_sorted()
        };
        let programs = InMemory::new()
            .program("/usr/local/bin/venus-sealer")
            .program("/usr/local/bin/venus-worker");
        let sealer_config = "/sim/var/lib/venus/sealer/config.toml";

        // Not there: a note, nothing checked.
        let host = Host {
            fs_root: FsRoot::new("/sim"),
            ..Host::in_memory(programs.clone())
        };
        let found = diagnose(&host);
        let note = found
            .iter()
            .find(|d| d.message.contains("the config.toml of `sealer`"))
            .unwrap();
        assert_eq!(note.severity, Severity::Note);
        assert!(note.message.contains(sealer_config), "{}", note.message);

        // There: every sealing task the sealer does not declare is left
        // allowed, and MaxSealingSectors = 0 is unlimited.
        let host = Host {
            fs_root: FsRoot::new("/sim"),
            ..Host::in_memory(programs.file(
                sealer_config,
                "[Sealing]\nMaxSealingSectors = 0\n[Storage]\nAllowPreCommit1 = false\n",
            ))
        };
        let found = diagnose(&host);
        let about = |needle: &str| found.iter().filter(|d| d.message.contains(needle)).count();
        assert_eq!(about("the config.toml of `sealer`"), 0, "{found:#?}");
        assert_eq!(
            about("MaxSealingSectors = 0 means no limit"),
            1,
            "{found:#?}"
        );
        assert_eq!(about("[Storage] AllowPreCommit1 is on"), 0, "{found:#?}");
        assert_eq!(about("[Storage] AllowPreCommit2 is on"), 1, "{found:#?}");
        assert!(found
            .iter()
            .all(|d| !d.message.contains("[Storage]") || d.message.starts_with(sealer_config)));
    }

    #[test]
    fn each_later_worker_on_a_taken_repo_or_port_is_reported_once() {
        // (listen, repo) of w0..w5.
        let workers = [
            ("0.0.0.0:3456", "/r/a"),
            ("127.0.0.1:3456", "/r/b"), // on w0's any-address port
            ("127.0.0.2:3457", "/r/a"), // w0's repo
            ("127.0.0.3:3457", "/r/c"), // another address: no collision
            ("127.0.0.2:3457", "/r/a"), // w2's address, w0's repo
            ("[::]:3457", "/r/d"),      // any address: collides with w2
            ("127.0.0.4:1", "/r/a/"),   // w0's repo, with a trailing slash
            ("127.0.0.5:1", "/r//./b"), // w1's repo, spelled otherwise
            ("127.0.0.6:1", "~/r/c"),   // root's home: /root/r/c
            ("127.0.0.7:1", "/root/r/c/"),
        ];
        let mut text = String::new();
        for (i, (listen, repo)) in workers.iter().enumerate() {
            text.push_str(&format!(
                "[[service]]\nname = \"w{i}\"\nrole = \"worker\"\ncommand = [\"/bin/w\", \"run\", \"--listen={listen}\"]\nenv = {{ VENUS_WORKER_PATH = \"{repo}\" }}\n"
            ));
        }
        let mut said: Vec<String> =
            crate::checks::testing::findings(&text, |config, plan, host, found| {
                check(config, plan, host, None, found);
            })
            .into_iter()
            .map(|d| d.message)
            .filter(|m| m.contains("share the worker repo") || m.contains("cannot bind"))
            .map(|m| m.split(';').next().unwrap_or_default().to_string())
            .collect();
        said.sort();
        assert_eq!(
            said,
            [
                "`w0` and `w2` share the worker repo /r/a",
                "`w0` and `w4` share the worker repo /r/a",
                "`w0` and `w6` share the worker repo /r/a",
                "`w1` and `w7` share the worker repo /r/b",
                "`w1` listens on 127.0.0.1:3456 and `w0` on 0.0.0.0:3456: the second cannot bind",
                "`w4` listens on 127.0.0.2:3457 and `w2` on 127.0.0.2:3457: the second cannot bind",
                "`w5` listens on [::]:3457 and `w2` on 127.0.0.2:3457: the second cannot bind",
                "`w8` and `w9` share the worker repo /root/r/c",
            ]
        );
    }
}
