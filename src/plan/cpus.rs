//! The CPU allocator: which CPUs each service gets, as a pure function of
//! what the services ask for and the host's topology. No file is read here;
//! the same requests on the same [`Layout`] always give the same CPUs.
//!
//! The rules (the README's "Cores, GPUs and confinement" says the same for
//! operators):
//!
//! - **Usable CPUs** are those online after the SMT step (with `smt = "off"`
//!   only the first thread of each core stays) minus `[host] reserved_cpus`.
//!   A share counts and takes **whole cores**: a core with a reserved thread
//!   is no part of any share.
//! - A share of p% is ⌊p × usable cores / 100⌋ cores, at least one. A
//!   service with `instances` splits its share: each of its n instances
//!   gets ⌊share / n⌋ cores (at least one), on a NUMA node of its own when
//!   it names one (its GPU's, or its node for `per-numa`) and that node
//!   has room; else anywhere, with a warning.
//! - Explicit lists are taken as written; they must be online (and stay
//!   online after the SMT step), and two lists must not overlap unless one
//!   of the services says it shares with the other. Shares are placed in
//!   the cores no list touches.
//! - Shares are placed largest first (ties in config order). Each one takes
//!   the shape that is best by, in order:
//!   1. the fewest NUMA nodes (one whenever it fits in one);
//!   2. for a service that runs PreCommit1 with multicore SDR: the same
//!      number of cores from every L3 group it touches, and at least one
//!      SDR unit per group (the proofs library splits the cores it sees into
//!      as many equal runs as there are L3 caches, and panics when they do
//!      not divide evenly);
//!   3. the fewest L3 groups (whole groups where the share allows);
//!   4. the fewest groups left part-used by it (for others: then an even
//!      shape);
//!   5. the lowest CPU numbers.
//! - `rest` is every usable CPU no other service got; `all` is every usable
//!   CPU, shared with everyone.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::host::topology::Topology;
use crate::util::cpulist::CpuSet;

/// Beyond this many NUMA nodes, only the nodes with the most free cores are
/// tried instead of every combination.
const MAX_NODES_TO_COMBINE: usize = 12;

/// One core after the SMT step.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Core {
    /// Its threads that stay online.
    cpus: CpuSet,
    /// One of them is in `reserved_cpus`: no share takes this core.
    reserved: bool,
}

/// The cores of one NUMA node that share one L3 cache.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    domain: usize,
    cores: Vec<Core>,
}

/// One NUMA node (of one package).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Domain {
    node: Option<u32>,
}

/// The host as the allocator sees it: NUMA nodes → L3 groups → cores, after
/// the SMT step, with the reserved CPUs marked. Groups are numbered in the
/// order `venussup topology` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    domains: Vec<Domain>,
    groups: Vec<Group>,
    online: CpuSet,
    reserved: CpuSet,
    l3_known: bool,
}

impl Layout {
    /// The layout of `topology` once the SMT step has run (`smt_off`: one
    /// thread per core stays, the one `venussup smt off` keeps).
    pub fn new(topology: &Topology, smt_off: bool, reserved: &CpuSet) -> Self {
        let mut layout = Self {
            domains: Vec::new(),
            groups: Vec::new(),
            online: topology.online(),
            reserved: reserved.clone(),
            l3_known: true,
        };
        for node in topology.tree().iter().flat_map(|p| &p.nodes) {
            let domain = layout.domains.len();
            layout.domains.push(Domain { node: node.node });
            for group in &node.l3_groups {
                layout.l3_known &= group.cpus.is_some();
                let cores = group
                    .cores
                    .iter()
                    .map(|c| {
                        let cpus = if smt_off {
                            c.threads.first().into_iter().collect()
                        } else {
                            c.threads.clone()
                        };
                        Core {
                            reserved: !cpus.intersection(reserved).is_empty(),
                            cpus,
                        }
                    })
                    .collect();
                layout.groups.push(Group { domain, cores });
            }
        }
        layout
    }

    /// A host that tells nothing but which CPUs are online: every CPU is a
    /// core, all in one group of one node of unknown number.
    pub fn flat(online: &CpuSet, reserved: &CpuSet) -> Self {
        let cores = online
            .iter()
            .map(|cpu| Core {
                cpus: [cpu].into_iter().collect(),
                reserved: reserved.contains(cpu),
            })
            .collect();
        Self {
            domains: vec![Domain { node: None }],
            groups: vec![Group { domain: 0, cores }],
            online: online.clone(),
            reserved: reserved.clone(),
            l3_known: false,
        }
    }

    fn cores(&self) -> impl Iterator<Item = (usize, &Core)> {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| group.cores.iter().map(move |c| (g, c)))
    }

    /// The host's NUMA nodes, in order; `None` when it does not tell them.
    pub fn numa_nodes(&self) -> Option<Vec<u32>> {
        let mut nodes: Vec<u32> = self.domains.iter().map(|d| d.node).collect::<Option<_>>()?;
        nodes.sort_unstable();
        nodes.dedup();
        Some(nodes)
    }

    /// CPUs online after the SMT step.
    pub fn after_smt(&self) -> CpuSet {
        self.cores()
            .flat_map(|(_, c)| c.cpus.iter().collect::<Vec<_>>())
            .collect()
    }

    /// CPUs online after the SMT step, minus the reserved ones.
    pub fn usable(&self) -> CpuSet {
        self.after_smt().difference(&self.reserved)
    }

    /// Whole cores a share may take.
    pub fn share_cores(&self) -> usize {
        self.cores().filter(|(_, c)| !c.reserved).count()
    }

    /// How many cores a share of `percent` gets here: ⌊p × cores / 100⌋,
    /// at least one.
    pub fn cores_for_share(&self, percent: u8) -> usize {
        (usize::from(percent) * self.share_cores() / 100).max(1)
    }

    /// Which L3 groups and NUMA nodes `cpus` touches, and how many cores.
    pub fn span(&self, cpus: &CpuSet) -> Span {
        let mut l3 = Vec::new();
        let mut domains = BTreeSet::new();
        for (g, group) in self.groups.iter().enumerate() {
            let taken = group
                .cores
                .iter()
                .filter(|c| c.cpus.iter().any(|cpu| cpus.contains(cpu)))
                .count();
            if taken > 0 {
                l3.push(L3Use {
                    group: g,
                    cores: taken,
                    of: group.cores.len(),
                });
                domains.insert(group.domain);
            }
        }
        let numa = domains
            .iter()
            .map(|&d| self.domains[d].node)
            .collect::<Option<CpuSet>>();
        Span {
            cores: l3.iter().map(|u| u.cores).sum(),
            nodes: domains.len(),
            numa,
            l3_known: self.l3_known,
            largest_node: self.largest_domain(),
            l3,
        }
    }

    /// The most usable cores one NUMA node has.
    fn largest_domain(&self) -> usize {
        (0..self.domains.len())
            .map(|d| {
                self.groups
                    .iter()
                    .filter(|g| g.domain == d)
                    .flat_map(|g| &g.cores)
                    .filter(|c| !c.reserved)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// The most cores an L3 group has.
    fn largest_group(&self) -> usize {
        self.groups.iter().map(|g| g.cores.len()).max().unwrap_or(0)
    }
}

/// How a CPU set lies on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Cores it touches (a core counts when any of its threads is in).
    pub cores: usize,
    /// The L3 groups it touches, by number.
    pub l3: Vec<L3Use>,
    /// How many NUMA nodes it touches.
    pub nodes: usize,
    /// Their numbers; `None` when the host does not tell.
    pub numa: Option<CpuSet>,
    /// Whether the host tells its L3 caches (else a node is one group).
    pub l3_known: bool,
    /// The most usable cores one NUMA node of the host has.
    pub largest_node: usize,
}

impl Span {
    /// Every L3 group it touches gives the same number of cores.
    pub fn even(&self) -> bool {
        self.l3.windows(2).all(|w| w[0].cores == w[1].cores)
    }

    /// Every L3 group it touches is wholly in it.
    pub fn whole_groups(&self) -> bool {
        self.l3.iter().all(|u| u.cores == u.of)
    }

    /// The fewest cores it takes from one of its L3 groups.
    pub fn min_per_group(&self) -> usize {
        self.l3.iter().map(|u| u.cores).min().unwrap_or(0)
    }
}

/// Cores taken from one L3 group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct L3Use {
    pub group: usize,
    pub cores: usize,
    /// Cores the group has (after the SMT step).
    pub of: usize,
}

/// What one service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A share of the usable cores, in percent.
    Share(u8),
    /// One of `parts` equal parts of a share (an instance of a service
    /// with `instances`).
    Part {
        percent: u8,
        parts: usize,
    },
    List(CpuSet),
    Rest,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub ask: Ask,
    /// Cores per multicore-SDR unit, when the service runs PreCommit1 with
    /// multicore SDR: its share then keeps equal cores per L3 group.
    pub sdr_unit: Option<usize>,
    /// Services whose CPUs its list may overlap.
    pub share_with: Vec<String>,
    /// The NUMA node its share should lie in (an instance's GPU's node).
    pub numa: Option<u32>,
}

/// The CPUs one service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub cpus: CpuSet,
    pub span: Span,
}

/// Something wrong with one request. All are errors but [`Problem::Reserved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NotOnline {
        cpus: CpuSet,
        online: CpuSet,
    },
    /// With `smt = "off"` these siblings go offline at start.
    GoesOffline {
        cpus: CpuSet,
        kept: CpuSet,
    },
    /// The list names CPUs kept for the OS (a warning).
    Reserved {
        cpus: CpuSet,
    },
    Overlap {
        with: String,
        cpus: CpuSet,
    },
    NoUsableCores,
    TooFew {
        need: usize,
        percent: u8,
        /// Instances the share is split over (1: not split).
        parts: usize,
        usable: usize,
        free: usize,
    },
    NothingLeft,
    /// Its NUMA node has too few free cores (or none usable): placed
    /// elsewhere (a warning).
    OffNode {
        node: u32,
        need: usize,
    },
}

impl Problem {
    pub fn is_error(&self) -> bool {
        !matches!(self, Problem::Reserved { .. } | Problem::OffNode { .. })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotOnline { cpus, online } => write!(
                f,
                "CPUs {cpus} are not online on this host (online: {online})"
            ),
            Problem::GoesOffline { cpus, kept } => write!(
                f,
                "CPUs {cpus} go offline at start: `smt = \"off\"` keeps one thread per core ({kept})"
            ),
            Problem::Reserved { cpus } => write!(
                f,
                "CPUs {cpus} are in `reserved_cpus` (kept for the OS)"
            ),
            Problem::Overlap { with, cpus } => write!(
                f,
                "CPUs {cpus} are also given to `{with}`; lists must not overlap unless one names the other in `share_cpus_with`"
            ),
            Problem::NoUsableCores => f.write_str(
                "this host has no usable cores for a share (none online, or all reserved)",
            ),
            Problem::TooFew {
                need,
                percent,
                parts,
                usable,
                free,
            } => write!(
                f,
                "{}{percent}% is {need} core{} of the {usable} usable, but only {free} {} free after the lists and larger shares; lower the shares",
                if *parts > 1 { format!("1/{parts} of ") } else { String::new() },
                plural(*need),
                if *free == 1 { "is" } else { "are" }
            ),
            Problem::NothingLeft => f.write_str(
                "`rest` gets nothing: the other services already take every usable CPU",
            ),
            Problem::OffNode { node, need } => write!(
                f,
                "NUMA node {node} (its GPU's or its own) has fewer than {need} free core{}, so its CPUs lie elsewhere; lower the share",
                plural(*need)
            ),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Every request's CPUs (`None` where it cannot be placed) and every
/// problem, by request index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub placements: Vec<Option<Placement>>,
    pub problems: Vec<(usize, Problem)>,
}

/// Places every request on `layout` (see the module's rules).
pub fn allocate(layout: &Layout, requests: &[Request]) -> Outcome {
    let mut placements: Vec<Option<CpuSet>> = vec![None; requests.len()];
    let mut problems = Vec::new();
    let after_smt = layout.after_smt();
    // Cores per group that shares may take: not reserved, not in a list.
    let mut free: Vec<Vec<usize>> = layout
        .groups
        .iter()
        .map(|g| {
            (0..g.cores.len())
                .filter(|&c| !g.cores[c].reserved)
                .collect()
        })
        .collect();

    for (i, r) in requests.iter().enumerate() {
        let Ask::List(set) = &r.ask else { continue };
        let offline = set.difference(&layout.online);
        if !offline.is_empty() {
            problems.push((
                i,
                Problem::NotOnline {
                    cpus: offline,
                    online: layout.online.clone(),
                },
            ));
        }
        let going = set.intersection(&layout.online).difference(&after_smt);
        if !going.is_empty() {
            problems.push((
                i,
                Problem::GoesOffline {
                    cpus: going,
                    kept: after_smt.clone(),
                },
            ));
        }
        let reserved = set.intersection(&layout.reserved);
        if !reserved.is_empty() {
            problems.push((i, Problem::Reserved { cpus: reserved }));
        }
        for (g, group) in layout.groups.iter().enumerate() {
            free[g].retain(|&c| group.cores[c].cpus.intersection(set).is_empty());
        }
        placements[i] = Some(set.clone());
    }
    overlaps(requests, &placements, &mut problems);

    let share_cores = layout.share_cores();
    let mut shares: Vec<(usize, u8, usize, usize)> = requests
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.ask {
            Ask::Share(p) => Some((i, p, 1, layout.cores_for_share(p))),
            Ask::Part { percent, parts } => Some((
                i,
                percent,
                parts,
                (layout.cores_for_share(percent) / parts.max(1)).max(1),
            )),
            _ => None,
        })
        .collect();
    shares.sort_by_key(|&(i, _, _, need)| (std::cmp::Reverse(need), i));
    for (i, percent, parts, need) in shares {
        if share_cores == 0 {
            problems.push((i, Problem::NoUsableCores));
            continue;
        }
        let sdr_unit = requests[i].sdr_unit;
        let placed = match requests[i].numa {
            None => place(layout, &free, need, sdr_unit, None),
            Some(node) => place(layout, &free, need, sdr_unit, Some(node)).or_else(|| {
                problems.push((i, Problem::OffNode { node, need }));
                place(layout, &free, need, sdr_unit, None)
            }),
        };
        match placed {
            Some(take) => {
                let mut cpus = CpuSet::new();
                for (g, count) in take {
                    for c in free[g].drain(..count) {
                        cpus.extend(layout.groups[g].cores[c].cpus.iter());
                    }
                }
                placements[i] = Some(cpus);
            }
            None => problems.push((
                i,
                Problem::TooFew {
                    need,
                    percent,
                    parts,
                    usable: share_cores,
                    free: free.iter().map(Vec::len).sum(),
                },
            )),
        }
    }

    let given = placements
        .iter()
        .flatten()
        .fold(CpuSet::new(), |acc, s| acc.union(s));
    let usable = layout.usable();
    for (i, r) in requests.iter().enumerate() {
        match r.ask {
            Ask::Rest => {
                let rest = usable.difference(&given);
                if rest.is_empty() {
                    problems.push((i, Problem::NothingLeft));
                } else {
                    placements[i] = Some(rest);
                }
            }
            Ask::All => placements[i] = Some(usable.clone()),
            Ask::Share(_) | Ask::Part { .. } | Ask::List(_) => {}
        }
    }
    problems.sort_by_key(|(i, _)| *i);
    Outcome {
        placements: placements
            .into_iter()
            .map(|p| {
                p.map(|cpus| Placement {
                    span: layout.span(&cpus),
                    cpus,
                })
            })
            .collect(),
        problems,
    }
}

/// Lists that overlap without leave, reported at the later one.
fn overlaps(
    requests: &[Request],
    placements: &[Option<CpuSet>],
    problems: &mut Vec<(usize, Problem)>,
) {
    let shares_with = |a: &Request, b: &Request| a.share_with.contains(&b.name);
    for (j, b) in requests.iter().enumerate() {
        let Some(sb) = &placements[j] else { continue };
        for (i, a) in requests.iter().enumerate().take(j) {
            let Some(sa) = &placements[i] else { continue };
            let common = sa.intersection(sb);
            if !common.is_empty() && !shares_with(a, b) && !shares_with(b, a) {
                problems.push((
                    j,
                    Problem::Overlap {
                        with: a.name.clone(),
                        cpus: common,
                    },
                ));
            }
        }
    }
}

/// Cores to take from each group, as (group, count), ascending by group.
type Shape = Vec<(usize, usize)>;

/// The best shape for `need` cores among the free ones (only in NUMA node
/// `node` when given), or `None` when fewer are free there.
fn place(
    layout: &Layout,
    free: &[Vec<usize>],
    need: usize,
    sdr_unit: Option<usize>,
    node: Option<u32>,
) -> Option<Shape> {
    let counts: Vec<usize> = free.iter().map(Vec::len).collect();
    let per_domain: Vec<usize> = (0..layout.domains.len())
        .map(|d| {
            if node.is_some_and(|n| layout.domains[d].node != Some(n)) {
                return 0;
            }
            layout
                .groups
                .iter()
                .zip(&counts)
                .filter(|(g, _)| g.domain == d)
                .map(|(_, n)| n)
                .sum()
        })
        .collect();
    let node_sets = node_sets(&per_domain, need)?;
    let unit = sdr_unit.map(|u| u.min(layout.largest_group()).max(1));
    let mut best: Option<(Key, Shape)> = None;
    for set in node_sets {
        let groups: Vec<usize> = (0..layout.groups.len())
            .filter(|&g| counts[g] > 0 && set.contains(&layout.groups[g].domain))
            .collect();
        let candidates = even_shapes(&groups, &counts, need)
            .into_iter()
            .chain(std::iter::once(packed_shape(&groups, &counts, need)));
        for shape in candidates {
            let key = Key::of(layout, free, &counts, &shape, unit);
            if best.as_ref().is_none_or(|(b, _)| key < *b) {
                best = Some((key, shape));
            }
        }
    }
    best.map(|(_, shape)| shape)
}

/// The sets of NUMA domains to try: every combination of the fewest
/// domains that together have `need` free cores.
fn node_sets(per_domain: &[usize], need: usize) -> Option<Vec<Vec<usize>>> {
    let mut by_free: Vec<usize> = (0..per_domain.len()).collect();
    by_free.sort_by_key(|&d| (std::cmp::Reverse(per_domain[d]), d));
    let mut sum = 0;
    let k = by_free.iter().position(|&d| {
        sum += per_domain[d];
        sum >= need
    })? + 1;
    if per_domain.len() > MAX_NODES_TO_COMBINE {
        let mut set = by_free[..k].to_vec();
        set.sort_unstable();
        return Some(vec![set]);
    }
    let mut sets = Vec::new();
    combinations(per_domain.len(), k, &mut Vec::new(), 0, &mut |c| {
        if c.iter().map(|&d| per_domain[d]).sum::<usize>() >= need {
            sets.push(c.to_vec());
        }
    });
    Some(sets)
}

fn combinations(
    n: usize,
    k: usize,
    current: &mut Vec<usize>,
    from: usize,
    f: &mut impl FnMut(&[usize]),
) {
    if current.len() == k {
        f(current);
        return;
    }
    for i in from..n {
        current.push(i);
        combinations(n, k, current, i + 1, f);
        current.pop();
    }
}

/// Shapes that take the same number of cores `c` from `need / c` groups,
/// for every `c` that divides `need`; each from the groups it fits best.
fn even_shapes(groups: &[usize], counts: &[usize], need: usize) -> Vec<Shape> {
    let most = groups.iter().map(|&g| counts[g]).max().unwrap_or(0);
    (1..=need.min(most))
        .rev()
        .filter(|c| need % c == 0)
        .filter_map(|c| {
            let mut fitting: Vec<usize> =
                groups.iter().copied().filter(|&g| counts[g] >= c).collect();
            fitting.sort_by_key(|&g| (counts[g] - c, g));
            let m = need / c;
            (fitting.len() >= m).then(|| {
                let mut shape: Shape = fitting[..m].iter().map(|&g| (g, c)).collect();
                shape.sort_unstable();
                shape
            })
        })
        .collect()
}

/// Whole free groups, largest first, while they fit; the remainder from
/// the group it fits best. The caller makes sure `need` cores are free.
fn packed_shape(groups: &[usize], counts: &[usize], need: usize) -> Shape {
    let mut shape: Shape = Vec::new();
    let mut remaining = need;
    let mut left: Vec<usize> = groups.to_vec();
    while remaining > 0 {
        let whole = left
            .iter()
            .copied()
            .filter(|&g| counts[g] <= remaining)
            .max_by_key(|&g| (counts[g], std::cmp::Reverse(g)));
        let Some(g) = whole else { break };
        shape.push((g, counts[g]));
        remaining -= counts[g];
        left.retain(|&x| x != g);
    }
    if remaining > 0 {
        if let Some(g) = left.iter().copied().min_by_key(|&g| (counts[g], g)) {
            shape.push((g, remaining));
        }
    }
    shape.sort_unstable();
    shape
}

/// How good a shape is; smaller is better (see the module's rules).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    nodes: usize,
    /// For multicore-SDR services: 0 when every group gives the same number
    /// of cores, at least one unit.
    sdr_misfit: usize,
    groups: usize,
    part_used: usize,
    uneven: usize,
    cpus: Vec<u32>,
}

impl Key {
    fn of(
        layout: &Layout,
        free: &[Vec<usize>],
        counts: &[usize],
        shape: &Shape,
        unit: Option<usize>,
    ) -> Self {
        let domains: BTreeSet<usize> = shape
            .iter()
            .map(|&(g, _)| layout.groups[g].domain)
            .collect();
        let even = shape.windows(2).all(|w| w[0].1 == w[1].1);
        let smallest = shape.iter().map(|&(_, c)| c).min().unwrap_or(0);
        let sdr_misfit = match unit {
            Some(u) => usize::from(!(even && smallest >= u)),
            None => 0,
        };
        let mut cpus: Vec<u32> = shape
            .iter()
            .flat_map(|&(g, c)| {
                free[g][..c]
                    .iter()
                    .flat_map(move |&core| layout.groups[g].cores[core].cpus.iter())
            })
            .collect();
        cpus.sort_unstable();
        Self {
            nodes: domains.len(),
            sdr_misfit,
            groups: shape.len(),
            part_used: shape.iter().filter(|&&(g, c)| c < counts[g]).count(),
            uneven: usize::from(!even),
            cpus,
        }
    }
}

#[cfg(test)]
mod tests;
