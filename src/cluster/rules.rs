//! The rules across hosts: what one host's config cannot show.
//!
//! - Each worker's `--miner-addr` names a sealer of the cluster that
//!   listens there: its `[API] ListenAddress` (stated in
//!   `[hosts.NAME.sealers.SERVICE] listen`; venus-sealer's default is
//!   `/ip4/127.0.0.1/tcp/2345/http`), its port replaced by `--miner-api`;
//!   a sealer listening on 0.0.0.0 is reached at its host's `address`, and
//!   a loopback target only reaches a sealer of the worker's own host.
//! - Each worker's token came from that sealer's `<repo>/token` on that
//!   sealer's host (`[hosts.NAME.tokens]`).
//! - The sealer's `MaxSealingSectors` counts the sealing sectors of every
//!   host that seals for it: it may not be above the sum of those hosts'
//!   capacity plans, and the sealer host's `[capacity] other_hosts` is the
//!   other hosts' part of it.
//! - A worker name is one worker's across the cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use super::ClusterHost;
use crate::checks::venus::lexical;
use crate::config::{Config, Role, ServiceConfig, ServiceKind};
use crate::util::diag::Diagnostics;
use crate::util::gocli;

/// venus-sealer's `[API] ListenAddress` when its config.toml does not
/// set it (`config/default_config.go`).
const SEALER_DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/2345/http";
/// venus-sealer's repo when neither `--repo` nor `VENUS_SEALER_PATH` says.
const SEALER_DEFAULT_REPO: &str = "~/.venussealer";

/// A host of the cluster with its derived config (when it could be read)
/// and its capacity plan (`recommended` of its `plan.json`, when given).
#[derive(Debug)]
pub struct Member<'a> {
    pub host: &'a ClusterHost,
    pub config: Option<&'a Config>,
    pub plan: Option<u64>,
}

/// One sealer of the cluster and where it listens.
struct Sealer<'a> {
    host: usize,
    service: &'a ServiceConfig,
    ip: Option<IpAddr>,
    port: String,
    /// Where the listen address was said: the stated `listen`, else the
    /// service's name.
    at: Range<usize>,
    repo: String,
    max: Option<(u64, Range<usize>)>,
}

/// A worker and the sealer it dials, as `check --cluster` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub host: String,
    pub worker: String,
    /// The sealer's host and service, and where the worker dials it.
    pub sealer_host: String,
    pub sealer: String,
    pub dials: String,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} → {} of {} at {}",
            self.host, self.worker, self.sealer, self.sealer_host, self.dials
        )
    }
}

/// Runs every rule across the hosts `members` (in the cluster file's
/// order); each worker whose sealer was found, with it.
pub fn check(members: &[Member<'_>], diags: &mut Diagnostics) -> Vec<Link> {
    let mut links = Vec::new();
    addresses(members, diags);
    let sealers = sealers(members, diags);
    stated_names(members, diags);
    let mut sealing_for: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (h, m) in members.iter().enumerate() {
        let Some(config) = m.config else { continue };
        for s in workers(config) {
            let name = s.name.get_ref().as_str();
            let host = m.host.name.get_ref().as_str();
            if let Some(first) = names.insert(name, host) {
                diags.warning(
                    span(m.host, s.name.span()),
                    format!("host `{host}`: worker `{name}` is also a worker of host `{first}`: venus-sealer does not mind (it tells workers apart by a session id and shows their machine's hostname, sector-storage/worker_local.go), but alerts and dashboards naming `{name}` are ambiguous; give each worker of the cluster its own name"),
                );
            }
            let Some(sealer) = target(m.host, s, &sealers, members, diags) else {
                continue;
            };
            let list = sealing_for.entry(sealer).or_default();
            if !list.contains(&h) {
                list.push(h);
            }
            let x = &sealers[sealer];
            token(m.host, s, x, members, diags);
            links.push(Link {
                host: host.to_string(),
                worker: name.to_string(),
                sealer_host: members[x.host].host.name.get_ref().clone(),
                sealer: x.service.name.get_ref().clone(),
                dials: gocli::worker_run(s.command.get_ref())
                    .ok()
                    .flatten()
                    .and_then(|r| r.miner_addr)
                    .unwrap_or_default(),
            });
        }
    }
    for (i, hosts) in &sealing_for {
        capacity(&sealers[*i], hosts, members, diags);
    }
    links
}

/// Each host's `address` is one the other hosts can dial, and its own.
fn addresses(members: &[Member<'_>], diags: &mut Diagnostics) {
    let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for m in members {
        let Some(a) = &m.host.address else { continue };
        let (ip, host) = (*a.get_ref(), m.host.name.get_ref().as_str());
        if ip.is_loopback() || ip.is_unspecified() {
            diags.error(a.span(), format!("host `{host}`: address {ip} is no address the other hosts can dial (it is each host itself, or none); give the address they reach `{host}` at"));
        } else if let Some(first) = seen.insert(ip, host) {
            diags.error(a.span(), format!("host `{host}`: address {ip} is also host `{first}`'s: a worker dialing it could not tell which host's sealer it reaches; give each host its own address"));
        }
    }
}

/// The span in the cluster file of `span` in `host`'s rendered config.
fn span(host: &ClusterHost, span: Range<usize>) -> Range<usize> {
    host.rendered.source_span(span)
}

fn workers(config: &Config) -> impl Iterator<Item = &ServiceConfig> {
    config
        .services
        .iter()
        .filter(|s| s.role == Role::Worker && s.kind == ServiceKind::Daemon)
}

/// The span of the argument starting with `--flag` in the service's
/// command, in the rendered text (the whole command when not found).
fn arg_span(host: &ClusterHost, s: &ServiceConfig, flag: &str) -> Range<usize> {
    let whole = s.command.span();
    let text = host.rendered.text.get(whole.clone()).unwrap_or_default();
    let (long, short) = (format!("--{flag}"), format!("-{flag}"));
    let found = text.find(&long).map(|at| (at, long.len()));
    found
        .or_else(|| text.find(&short).map(|at| (at, short.len())))
        .map_or(whole.clone(), |(at, len)| {
            whole.start + at..whole.start + at + len
        })
}

/// A variable of the service's environment: its own `env`, else `[host.env]`.
fn env<'a>(config: &'a Config, s: &'a ServiceConfig, var: &str) -> Option<&'a str> {
    let find = |env: &'a BTreeMap<toml::Spanned<String>, String>| {
        env.iter()
            .find(|(k, _)| k.get_ref() == var)
            .map(|(_, v)| v.as_str())
    };
    find(&s.env).or_else(|| find(&config.host.env))
}

/// Every sealer daemon of the cluster, with where it listens.
fn sealers<'a>(members: &[Member<'a>], diags: &mut Diagnostics) -> Vec<Sealer<'a>> {
    let mut out = Vec::new();
    for (h, m) in members.iter().enumerate() {
        let Some(config) = m.config else { continue };
        for s in config
            .services
            .iter()
            .filter(|s| s.role == Role::Sealer && s.kind == ServiceKind::Daemon)
        {
            let stated = m
                .host
                .sealers
                .iter()
                .find(|(k, _)| k.get_ref() == s.name.get_ref())
                .map(|(_, v)| v);
            let (listen, at) = match stated {
                Some(f) => (f.listen.get_ref().clone(), f.listen.span()),
                None => (
                    SEALER_DEFAULT_LISTEN.to_string(),
                    span(m.host, s.name.span()),
                ),
            };
            let Some((ip, mut port)) = gocli::multiaddr_host_port(&listen) else {
                diags.error(at, format!("host `{}`: `listen` of sealer `{}` is not a multiaddr `/ip4/IP/tcp/PORT/http` ([API] ListenAddress of its config.toml)", m.host.name.get_ref(), s.name.get_ref()));
                continue;
            };
            let run = gocli::subcommand(
                s.command.get_ref(),
                gocli::SEALER_GLOBAL,
                "run",
                gocli::SEALER_RUN,
            );
            let mut repo = env(config, s, "VENUS_SEALER_PATH").map(str::to_string);
            if let Ok(Some((global, run))) = run {
                if let Some(p) = run.set.get("miner-api").filter(|p| !p.is_empty()) {
                    port.clone_from(p);
                }
                if let Some(r) = global.set.get("repo") {
                    repo = Some(r.clone());
                }
            }
            let repo = repo.unwrap_or_else(|| SEALER_DEFAULT_REPO.to_string());
            out.push(Sealer {
                host: h,
                service: s,
                ip: ip.parse().ok(),
                port,
                at,
                repo: format!("{}/token", repo.trim_end_matches('/')),
                max: stated
                    .and_then(|f| f.max_sealing_sectors.as_ref())
                    .map(|m| (*m.get_ref(), m.span())),
            });
        }
    }
    out
}

/// `sealers` and `tokens` entries must name services of their host.
fn stated_names(members: &[Member<'_>], diags: &mut Diagnostics) {
    for m in members {
        let Some(config) = m.config else { continue };
        let host = m.host.name.get_ref();
        let has = |name: &str, role: Role| {
            config
                .services
                .iter()
                .any(|s| s.name.get_ref() == name && s.role == role)
        };
        for key in m
            .host
            .sealers
            .keys()
            .filter(|k| !has(k.get_ref(), Role::Sealer))
        {
            diags.error(key.span(), format!("host `{host}` has no sealer `{}` (a service with role = \"sealer\"): `[hosts.{host}.sealers.NAME]` states what the config.toml of one of its sealers says", key.get_ref()));
        }
        for key in m
            .host
            .tokens
            .keys()
            .filter(|k| !has(k.get_ref(), Role::Worker))
        {
            diags.error(key.span(), format!("host `{host}` has no worker `{}` (a service with role = \"worker\"): `[hosts.{host}.tokens]` names each worker's token file", key.get_ref()));
        }
    }
}

/// Where `host`'s sealer listening on `ip` is reached from elsewhere.
fn describe(s: &Sealer<'_>, members: &[Member<'_>]) -> String {
    let host = members[s.host].host;
    let ip = match (s.ip, host.address.as_ref()) {
        (Some(ip), Some(a)) if ip.is_unspecified() => format!("{} (0.0.0.0)", a.get_ref()),
        (Some(ip), _) => ip.to_string(),
        (None, _) => "?".to_string(),
    };
    format!(
        "`{}` of {} at {ip}:{}",
        s.service.name.get_ref(),
        host.name.get_ref(),
        s.port
    )
}

/// The sealer the worker `s` of `host` dials, or the error saying none
/// listens there.
fn target(
    host: &ClusterHost,
    s: &ServiceConfig,
    sealers: &[Sealer<'_>],
    members: &[Member<'_>],
    diags: &mut Diagnostics,
) -> Option<usize> {
    let name = s.name.get_ref();
    let hn = host.name.get_ref();
    let at = span(host, arg_span(host, s, "miner-addr"));
    let run = gocli::worker_run(s.command.get_ref()).ok().flatten()?;
    let Some(ma) = run.miner_addr else {
        diags.note(
            span(host, s.name.span()),
            format!("host `{hn}`: `{name}` has no --miner-addr, so it dials the `[Sealer] Url` of its repo's config.toml, which is on its host and not visible here: its sealer, token and MaxSealingSectors were not checked; give --miner-addr=/ip4/IP/tcp/PORT"),
        );
        return None;
    };
    let (ip, port) = gocli::multiaddr_host_port(&ma)?;
    let Ok(ip) = ip.parse::<IpAddr>() else {
        diags.note(
            at,
            format!("host `{hn}`: `{name}` dials its sealer at {ip}, a name rather than an address: which host it names is not known here, so its sealer, token and MaxSealingSectors were not checked"),
        );
        return None;
    };
    let me = members.iter().position(|m| std::ptr::eq(m.host, host))?;
    let reaches = |x: &Sealer<'_>| {
        let listen = x.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let address = members[x.host].host.address.as_ref().map(|a| *a.get_ref());
        x.port == port
            && if ip.is_loopback() {
                x.host == me && (listen.is_loopback() || listen.is_unspecified())
            } else {
                listen == ip || (listen.is_unspecified() && address == Some(ip))
            }
    };
    if let Some(i) = sealers.iter().position(reaches) {
        return Some(i);
    }
    let all: Vec<String> = sealers.iter().map(|x| describe(x, members)).collect();
    let listening = if all.is_empty() {
        "the cluster has no sealer".to_string()
    } else {
        format!("its sealers listen at {}", all.join(", "))
    };
    let why = if ip.is_unspecified() {
        format!("{ip} is no address to dial")
    } else if ip.is_loopback() {
        format!("{ip} is host `{hn}` itself, and no sealer of `{hn}` listens on port {port}")
    } else {
        format!("no sealer of the cluster listens at {ip}:{port}")
    };
    let hint = sealers
        .iter()
        .find(|x| x.port == port && members[x.host].host.address.as_ref().is_some_and(|a| *a.get_ref() == ip))
        .map(|x| match x.ip {
            Some(l) if l.is_loopback() => format!(" (`{}` of {} listens on {l} only, which other hosts cannot reach: set its [API] ListenAddress to /ip4/0.0.0.0/tcp/{port}/http or to the host's address)", x.service.name.get_ref(), members[x.host].host.name.get_ref()),
            _ => String::new(),
        })
        .unwrap_or_default();
    diags.error(
        at,
        format!("host `{hn}`: `{name}` dials its sealer at --miner-addr={ma}, but {why}{hint}: venus-worker waits there for ever (`Connecting to miner API`), and never works; {listening}; point --miner-addr at one of them (a sealer on another host at that host's `address`)"),
    );
    None
}

/// The worker's token must be the sealer's `<repo>/token`, from the
/// sealer's host.
fn token(
    host: &ClusterHost,
    s: &ServiceConfig,
    sealer: &Sealer<'_>,
    members: &[Member<'_>],
    diags: &mut Diagnostics,
) {
    let name = s.name.get_ref();
    let hn = host.name.get_ref();
    let sealer_host = members[sealer.host].host.name.get_ref();
    let expected = format!("{sealer_host}:{}", sealer.repo);
    let stated = host
        .tokens
        .iter()
        .find(|(k, _)| k.get_ref() == name)
        .map(|(_, v)| v);
    let Some(stated) = stated else {
        diags.warning(
            span(host, s.name.span()),
            format!("host `{hn}`: where the token of `{name}` comes from is not stated, so it was not checked: add `{name} = \"{expected}\"` to [hosts.{hn}.tokens] (the `token` file of its sealer's repo, copied into the worker's `[Sealer] Token`)"),
        );
        return;
    };
    let same = stated
        .get_ref()
        .split_once(':')
        .is_some_and(|(h, p)| h == sealer_host && lexical(p) == lexical(&sealer.repo));
    if !same {
        diags.error(
            stated.span(),
            format!("host `{hn}`: the token of `{name}` comes from {}, but the sealer it dials ({}) keeps its token in {expected} (`venus-sealer run` signs it with its config.toml's `[JWT] Secret` and writes it to `<repo>/token` at each start, and verifies every caller's token with that secret): a token from another file was signed by another secret unless both sealers share one, and the sealer refuses it; copy {expected} into the worker's `[Sealer] Token` and state `{name} = \"{expected}\"`", stated.get_ref(), describe(sealer, members)),
        );
    }
}

/// The sealer's `MaxSealingSectors` against the capacity plans of the
/// hosts that seal for it, and the sealer host's `other_hosts`.
fn capacity(sealer: &Sealer<'_>, hosts: &[usize], members: &[Member<'_>], diags: &mut Diagnostics) {
    let own = members[sealer.host].host;
    let sn = sealer.service.name.get_ref();
    let plans: Vec<(&str, Option<u64>)> = hosts
        .iter()
        .map(|&h| (members[h].host.name.get_ref().as_str(), members[h].plan))
        .collect();
    let missing: Vec<&str> = plans
        .iter()
        .filter(|p| p.1.is_none())
        .map(|p| p.0)
        .collect();
    if !missing.is_empty() {
        diags.note(
            own.name.span(),
            format!("host `{}`: MaxSealingSectors of `{sn}` was not checked against the capacity plans of the hosts sealing for it: no plan.json for {} (give --facts DIR with DIR/HOST/plan.json, `venussup plan --json` on each host)", own.name.get_ref(), missing.join(", ")),
        );
        return;
    }
    let sum: u64 = plans.iter().filter_map(|p| p.1).sum();
    let each: Vec<String> = plans
        .iter()
        .map(|(h, n)| format!("{h} {}", n.unwrap_or(0)))
        .collect();
    let each = each.join(" + ");
    match &sealer.max {
        Some((max, at)) if *max == 0 || *max > sum => diags.error(
            at.clone(),
            format!("host `{}`: MaxSealingSectors = {max} of `{sn}` is above what the hosts sealing for it can seal at once: {each} = {sum} (each host's `venussup plan`); it counts every sealing sector of the sealer on every host (0 is no limit), so sectors beyond {sum} start and then fail for lack of memory or disk; set it to {sum}", own.name.get_ref()),
        ),
        Some(_) => {}
        None => diags.warning(
            sealer.at.clone(),
            format!("host `{}`: MaxSealingSectors of `{sn}` is not stated, so it was not checked against the hosts' plans ({each} = {sum}): add `max_sealing_sectors = {sum}` to [hosts.{}.sealers.{sn}], as its config.toml says", own.name.get_ref(), own.name.get_ref()),
        ),
    }
    let others: u64 = plans
        .iter()
        .filter(|(h, _)| *h != own.name.get_ref())
        .filter_map(|p| p.1)
        .sum();
    let stated = members[sealer.host]
        .config
        .and_then(|c| c.capacity.as_ref())
        .map_or(0, |c| c.other_hosts);
    if stated != others {
        let at = own
            .other_hosts_at
            .clone()
            .unwrap_or_else(|| own.name.span());
        let msg = format!("host `{}`: [capacity] other_hosts = {stated}, but the other hosts sealing for `{sn}` can seal {others} at once (their `venussup plan`); `venussup check` on `{}` adds it to this host's plan to check the sealer's MaxSealingSectors; set it to {others}", own.name.get_ref(), own.name.get_ref());
        if stated > others {
            diags.error(at, msg);
        } else {
            diags.warning(at, msg);
        }
    }
}
