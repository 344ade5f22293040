//! The soak's rules over what one round saw, as pure functions of the
//! namespace's processes, the status and the measurements: unit-tested
//! below on made-up processes, without a daemon.

use std::collections::{BTreeMap, HashMap};

use crate::common::pidns::Proc;

/// (name in status, the stand-in's `--name`, its grandchild's pid file).
pub const DESIRED: [(&str, &str, Option<&str>); 4] = [
    ("sealer", "sealer", None),
    ("w@0", "w0", Some("hold-w0")),
    ("w@1", "w1", Some("hold-w1")),
    ("c", "c", Some("hold-c")),
];
/// The timer's stand-in name.
pub const PLEDGE: &str = "pledge";

pub const ZOMBIE: &str = "no zombie in the namespace";
pub const TWO_SEALERS: &str = "never two sealers";
pub const ESCAPED: &str = "no process outlives its service's run \
    (issue #18 item 5: a setsid child escapes; tracking cgroups)";
pub const ORPHAN_RUN: &str = "no timer run outlives the venussup that started it \
    (issue #18 item 5: timer runs recorded)";
pub const TWO_PLEDGES: &str =
    "at most one pledge run at a time (issue #18 item 5: a leftover run is stopped first)";
pub const STRAY: &str = "no process but venussup, its services and timer runs";
pub const FD_LEAK: &str = "no descriptor leaks in venussup";
pub const RSS_GROWS: &str = "venussup's RSS does not grow after warm-up \
    (with clients that never read: issue #18 item 3, a small output cap per client)";
pub const RSS_BOUND: &str =
    "venussup's RSS stays under 50 MiB (issue #18 item 3: a small output cap per client)";

/// What one round saw in the namespace.
pub struct Round<'a> {
    /// Every process of the namespace but its reaper.
    pub procs: &'a [Proc],
    /// venussup, outside pid.
    pub vpid: i32,
    /// Main pids (inside) by status name, as `status` shows them.
    pub mains: &'a BTreeMap<String, i64>,
    /// The grandchild of each stand-in's current run (inside pid).
    pub holders: &'a BTreeMap<&'static str, i32>,
}

/// A process that breaks a rule (a failure once it lasts), by identity.
pub type Suspect = ((i32, u64), &'static str, String);

#[derive(Debug, Default)]
pub struct Findings {
    pub suspects: Vec<Suspect>,
    /// Timer runs now (inside pids): more than one is a failure at once.
    pub pledges: Vec<i32>,
    /// Main processes per stand-in name that match the status.
    pub mains: BTreeMap<&'static str, usize>,
}

impl Findings {
    /// Every desired service runs exactly once, nothing else is amiss.
    pub fn exactly_once(&self) -> bool {
        self.suspects.is_empty()
            && self.pledges.len() <= 1
            && DESIRED.iter().all(|d| self.mains.get(d.1) == Some(&1))
    }
}

pub fn classify(r: &Round) -> Findings {
    let by_pid: HashMap<i32, &Proc> = r.procs.iter().map(|p| (p.pid, p)).collect();
    let under_venussup = |p: &Proc| {
        let mut at = p.ppid;
        for _ in 0..64 {
            if at == r.vpid {
                return true;
            }
            match by_pid.get(&at) {
                Some(q) => at = q.ppid,
                None => return false,
            }
        }
        false
    };
    let mut f = Findings::default();
    for p in r.procs.iter().filter(|p| p.pid != r.vpid) {
        let key = (p.pid, p.start);
        let mut suspect = |kind| f.suspects.push((key, kind, format!("{p:?}")));
        if p.zombie() {
            suspect(ZOMBIE);
            continue;
        }
        let name = p.standin_name().unwrap_or_default();
        if name == PLEDGE {
            if !under_venussup(p) {
                suspect(ORPHAN_RUN);
            }
            f.pledges.push(p.ns_pid);
        } else if let Some((status_name, standin, _)) = DESIRED.iter().find(|d| d.1 == name) {
            if r.mains.get(*status_name) == Some(&i64::from(p.ns_pid)) {
                *f.mains.entry(standin).or_default() += 1;
            } else if r.holders.get(standin) != Some(&p.ns_pid) {
                suspect(if *standin == "sealer" {
                    TWO_SEALERS
                } else {
                    ESCAPED
                });
            }
        } else if !under_venussup(p) {
            suspect(STRAY);
        }
    }
    f
}

/// (descriptors, RSS KiB) of one venussup, one sample a round.
pub type Sample = (usize, u64);

/// After a warm-up of `skip` rounds: the least descriptor count and RSS
/// of the last third may not exceed those of the first third (the least,
/// so that a client held open or a reply being written does not count),
/// and the RSS stays under 50 MiB throughout.
pub fn growth(samples: &[Sample], skip: usize) -> Vec<(&'static str, String)> {
    let s = samples.get(skip..).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(max) = s.iter().map(|x| x.1).max().filter(|m| *m > 50 * 1024) {
        out.push((RSS_BOUND, format!("{max} KiB")));
    }
    if s.len() < 9 {
        return out;
    }
    let third = s.len() / 3;
    let (first, last) = (&s[..third], &s[s.len() - third..]);
    let least = |w: &[Sample], f: fn(&Sample) -> u64| w.iter().map(f).min().unwrap_or(0);
    let fds = |x: &Sample| u64::try_from(x.0).unwrap_or(u64::MAX);
    let rss = |x: &Sample| x.1;
    if least(last, fds) > least(first, fds) + 4 {
        let (a, b) = (least(first, fds), least(last, fds));
        out.push((FD_LEAK, format!("from {a} to {b}")));
    }
    if least(last, rss) > least(first, rss) + 8 * 1024 {
        let (a, b) = (least(first, rss), least(last, rss));
        out.push((RSS_GROWS, format!("from {a} KiB to {b} KiB")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: i32 = 100;

    fn p(pid: i32, ppid: i32, argv: &[&str]) -> Proc {
        Proc {
            pid,
            ns_pid: pid - 1000,
            ppid,
            state: 'S',
            start: 1,
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn standin(pid: i32, ppid: i32, name: &str) -> Proc {
        p(pid, ppid, &["venussup", "standin", "--name", name])
    }

    /// The healthy namespace: venussup, its four services, a grandchild
    /// of w0's run, a pledge and a gate run under venussup.
    fn healthy() -> (
        Vec<Proc>,
        BTreeMap<String, i64>,
        BTreeMap<&'static str, i32>,
    ) {
        let procs = vec![
            p(V, 0, &["venussup", "run"]),
            standin(1001, V, "sealer"),
            standin(1002, V, "w0"),
            standin(1003, V, "w1"),
            standin(1004, V, "c"),
            standin(1005, V, "w0"),
            standin(1006, V, "pledge"),
            p(1007, V, &["/bin/echo", "0"]),
        ];
        let mains = [("sealer", 1), ("w@0", 2), ("w@1", 3), ("c", 4)]
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        (procs, mains, BTreeMap::from([("w0", 5)]))
    }

    fn run(
        procs: &[Proc],
        mains: &BTreeMap<String, i64>,
        h: &BTreeMap<&'static str, i32>,
    ) -> Findings {
        classify(&Round {
            procs,
            vpid: V,
            mains,
            holders: h,
        })
    }

    fn kinds(f: &Findings) -> Vec<&'static str> {
        f.suspects.iter().map(|s| s.1).collect()
    }

    #[test]
    fn a_healthy_namespace_has_every_service_exactly_once() {
        let (procs, mains, h) = healthy();
        let f = run(&procs, &mains, &h);
        assert!(f.exactly_once(), "{f:?}");
    }

    #[test]
    fn a_second_sealer_an_old_grandchild_a_zombie_and_a_stray_are_each_named() {
        let (mut procs, mains, h) = healthy();
        procs.push(standin(1010, 1, "sealer"));
        procs.push(standin(1011, V, "w1"));
        let mut z = p(1012, V, &[]);
        z.state = 'Z';
        procs.push(z);
        procs.push(p(1013, 1, &["/bin/sleep", "60"]));
        let f = run(&procs, &mains, &h);
        assert_eq!(kinds(&f), [TWO_SEALERS, ESCAPED, ZOMBIE, STRAY]);
        assert!(!f.exactly_once());
    }

    #[test]
    fn a_pledge_left_by_a_killed_venussup_is_an_orphan_and_a_second_run() {
        let (mut procs, mains, h) = healthy();
        procs.push(standin(1020, 1, "pledge"));
        let f = run(&procs, &mains, &h);
        assert_eq!(kinds(&f), [ORPHAN_RUN]);
        assert_eq!(f.pledges, [6, 20]);
        assert!(!f.exactly_once());
    }

    #[test]
    fn a_service_in_backoff_is_not_yet_exactly_once() {
        let (procs, mut mains, h) = healthy();
        mains.remove("c");
        let f = run(&procs, &mains, &h);
        assert!(!f.exactly_once());
    }

    #[test]
    fn growth_ignores_spikes_but_names_a_steady_rise_and_a_high_rss() {
        let steady: Vec<Sample> = (0..30u64)
            .map(|i| {
                (
                    14 + usize::try_from(i % 3).unwrap(),
                    15_000 + (i % 2) * 20_000,
                )
            })
            .collect();
        assert!(growth(&steady, 5).is_empty(), "{:?}", growth(&steady, 5));
        let leak: Vec<Sample> = (0..30usize).map(|i| (14 + i, 15_000)).collect();
        assert_eq!(growth(&leak, 5)[0].0, FD_LEAK);
        let fat: Vec<Sample> = (0..30u64).map(|i| (14, 15_000 + i * 2048)).collect();
        let kinds: Vec<_> = growth(&fat, 5).into_iter().map(|g| g.0).collect();
        assert_eq!(kinds, [RSS_BOUND, RSS_GROWS]);
    }
}
