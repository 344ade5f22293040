//! The allocator against hand-picked hosts of the deployment plan, then
//! property loops over many host shapes and share sets.

use super::*;
use crate::host::topology::sim::{Numbering, Shape};
use crate::host::topology::Topology;

fn set(list: &str) -> CpuSet {
    CpuSet::parse_list(list).unwrap()
}

/// The topology a simulated host of `shape` reads as.
fn topology(shape: &Shape) -> Topology {
    shape.topology()
}

fn shape(packages: u32, cores: u32, threads: u32, nodes: u32, l3_per_node: u32) -> Shape {
    Shape {
        packages,
        cores_per_package: cores,
        threads_per_core: threads,
        numbering: Numbering::Spread,
        l3_per_node,
        nodes_per_package: nodes,
    }
}

/// The deployment plan's host: 2 sockets × 64 cores, 2 threads each, L3
/// groups of 8 cores, one NUMA node per socket.
fn plan_host() -> Shape {
    shape(2, 64, 2, 1, 8)
}

fn req(name: &str, ask: Ask) -> Request {
    Request {
        name: name.to_string(),
        ask,
        sdr_unit: None,
        share_with: Vec::new(),
        numa: None,
    }
}

fn sdr(name: &str, percent: u8) -> Request {
    Request {
        sdr_unit: Some(4),
        ..req(name, Ask::Share(percent))
    }
}

fn cpus(outcome: &Outcome, i: usize) -> String {
    outcome.placements[i]
        .as_ref()
        .map_or("-".to_string(), |p| p.cpus.to_string())
}

fn per_group(outcome: &Outcome, i: usize) -> Vec<usize> {
    outcome.placements[i]
        .as_ref()
        .unwrap()
        .span
        .l3
        .iter()
        .map(|u| u.cores)
        .collect()
}

#[test]
fn host_b_75_25_on_the_plans_host_is_l3_aligned_and_one_node_for_the_small_share() {
    let layout = Layout::new(&topology(&plan_host()), true, &CpuSet::new());
    assert_eq!(layout.share_cores(), 128);
    let out = allocate(
        &layout,
        &[sdr("worker01", 75), req("worker02", Ask::Share(25))],
    );
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(cpus(&out, 0), "0-95");
    assert_eq!(cpus(&out, 1), "96-127");
    let w1 = &out.placements[0].as_ref().unwrap().span;
    assert_eq!((w1.cores, w1.l3.len(), w1.nodes), (96, 12, 2));
    assert!(w1.whole_groups() && w1.even());
    assert_eq!(w1.numa, Some(set("0-1")));
    let w2 = &out.placements[1].as_ref().unwrap().span;
    assert_eq!((w2.cores, w2.l3.len(), w2.nodes), (32, 4, 1));
    assert_eq!(w2.l3.first().map(|u| u.group), Some(12));
    assert_eq!(w2.numa, Some(set("1")));
}

#[test]
fn with_smt_kept_a_share_takes_every_thread_of_its_cores() {
    let layout = Layout::new(&topology(&plan_host()), false, &CpuSet::new());
    let out = allocate(&layout, &[req("a", Ask::Share(75)), req("b", Ask::Rest)]);
    assert_eq!(cpus(&out, 0), "0-95,128-223");
    assert_eq!(cpus(&out, 1), "96-127,224-255");
}

#[test]
fn a_share_that_fits_in_one_numa_node_stays_in_one() {
    // 2 nodes of 32 cores, 4 L3 groups of 8 each.
    let layout = Layout::new(&topology(&shape(2, 32, 1, 1, 4)), false, &CpuSet::new());
    let out = allocate(
        &layout,
        &[
            req("small", Ask::Share(25)),
            req("half", Ask::Share(50)),
            req("tail", Ask::Share(25)),
        ],
    );
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    // Largest first: half takes node 0 whole; the quarters share node 1.
    assert_eq!(cpus(&out, 1), "0-31");
    assert_eq!(cpus(&out, 0), "32-47");
    assert_eq!(cpus(&out, 2), "48-63");
    for i in 0..3 {
        assert_eq!(out.placements[i].as_ref().unwrap().span.nodes, 1);
    }
}

#[test]
fn multicore_sdr_shares_take_equal_cores_per_l3_group_others_pack() {
    // One node, 3 L3 groups of 8 cores: 12 cores is 8+4 packed, 6+6 even.
    let layout = Layout::new(&topology(&shape(1, 24, 1, 1, 3)), false, &CpuSet::new());
    let p1 = allocate(&layout, &[sdr("p1", 50)]);
    assert_eq!(per_group(&p1, 0), vec![6, 6]);
    let c2 = allocate(&layout, &[req("c2", Ask::Share(50))]);
    assert_eq!(per_group(&c2, 0), vec![8, 4]);
    // 20 cores of 4 groups of 8: 5+5+5+5, never 8+8+4 (the proofs library
    // would panic: 20 cores do not split into 3 equal runs).
    let layout = Layout::new(&topology(&shape(1, 32, 1, 1, 4)), false, &CpuSet::new());
    let p1 = allocate(&layout, &[sdr("p1", 63)]);
    assert_eq!(per_group(&p1, 0), vec![5, 5, 5, 5]);
}

#[test]
fn reserved_cpus_are_no_part_of_a_share_and_their_core_is_not_counted() {
    let layout = Layout::new(&topology(&shape(1, 8, 2, 1, 1)), false, &set("0"));
    assert_eq!(layout.share_cores(), 7);
    assert_eq!(layout.usable(), set("1-15"));
    let out = allocate(&layout, &[req("a", Ask::Share(50)), req("b", Ask::Rest)]);
    // 50% of 7 cores is 3 cores; core 0 (CPUs 0, 8) is reserved, but its
    // sibling 8 is usable and goes to `rest`.
    assert_eq!(cpus(&out, 0), "1-3,9-11");
    assert_eq!(cpus(&out, 1), "4-8,12-15");
}

#[test]
fn lists_are_checked_and_shares_go_around_them() {
    let layout = Layout::new(&topology(&shape(1, 8, 2, 1, 1)), true, &set("7"));
    let mut shared = req("c", Ask::List(set("1")));
    shared.share_with = vec!["a".to_string(), "b".to_string()];
    let out = allocate(
        &layout,
        &[
            req("a", Ask::List(set("0-1"))),
            req("b", Ask::List(set("1,9,40"))),
            shared,
            req("d", Ask::List(set("7"))),
            req("e", Ask::Share(50)),
        ],
    );
    let problems: Vec<(usize, String)> = out
        .problems
        .iter()
        .map(|(i, p)| (*i, p.to_string()))
        .collect();
    assert_eq!(
        problems,
        vec![
            (1, "CPUs 40 are not online on this host (online: 0-15)".to_string()),
            (1, "CPUs 9 go offline at start: `smt = \"off\"` keeps one thread per core (0-7)".to_string()),
            (1, "CPUs 1 are also given to `a`; lists must not overlap unless one names the other in `share_cpus_with`".to_string()),
            (3, "CPUs 7 are in `reserved_cpus` (kept for the OS)".to_string()),
        ]
    );
    assert!(!out.problems[3].1.is_error());
    // 50% of the 7 unreserved cores is 3, placed after the lists' cores.
    assert_eq!(cpus(&out, 4), "2-4");
}

#[test]
fn rest_takes_what_is_left_and_says_when_nothing_is() {
    let layout = Layout::new(&topology(&shape(1, 4, 1, 1, 1)), false, &CpuSet::new());
    let out = allocate(
        &layout,
        &[
            req("a", Ask::Share(50)),
            req("r", Ask::Rest),
            req("all", Ask::All),
        ],
    );
    assert_eq!(
        (cpus(&out, 0), cpus(&out, 1), cpus(&out, 2)),
        ("0-1".into(), "2-3".into(), "0-3".into())
    );
    let out = allocate(&layout, &[req("a", Ask::Share(100)), req("r", Ask::Rest)]);
    assert_eq!(out.problems, vec![(1, Problem::NothingLeft)]);
}

#[test]
fn host_b_on_a_2_cpu_vm_gives_one_core_each_and_a_third_share_is_an_error() {
    let layout = Layout::new(&topology(&shape(1, 2, 1, 1, 1)), true, &CpuSet::new());
    let out = allocate(
        &layout,
        &[sdr("worker01", 75), req("worker02", Ask::Share(25))],
    );
    assert!(out.problems.is_empty());
    assert_eq!((cpus(&out, 0), cpus(&out, 1)), ("0".into(), "1".into()));
    let out = allocate(
        &layout,
        &[
            sdr("worker01", 75),
            req("worker02", Ask::Share(20)),
            req("x", Ask::Share(5)),
        ],
    );
    assert_eq!(
        out.problems,
        vec![(
            2,
            Problem::TooFew {
                parts: 1,
                need: 1,
                percent: 5,
                usable: 2,
                free: 0
            }
        )]
    );
    assert_eq!(
        out.problems[0].1.to_string(),
        "5% is 1 core of the 2 usable, but only 0 are free after the lists and larger shares; lower the shares"
    );
}

#[test]
fn a_host_that_only_lists_its_cpus_is_one_flat_group() {
    let layout = Layout::flat(&set("0-3"), &CpuSet::new());
    let out = allocate(&layout, &[req("a", Ask::Share(50))]);
    let span = &out.placements[0].as_ref().unwrap().span;
    assert_eq!(
        (cpus(&out, 0).as_str(), span.numa.clone(), span.l3_known),
        ("0-1", None, false)
    );
    let empty = Layout::flat(&CpuSet::new(), &CpuSet::new());
    assert_eq!(
        allocate(&empty, &[req("a", Ask::Share(50))]).problems,
        vec![(0, Problem::NoUsableCores)]
    );
}

/// A small deterministic generator for the property loops (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        u32::try_from(self.0 % u64::from(n.max(1))).unwrap()
    }
}

/// Random host shapes and share sets: every placement is whole cores,
/// disjoint, of the promised size, deterministic, and the largest share on
/// a fresh host is whole L3 groups when its size allows and one NUMA node
/// when it fits in one.
#[test]
fn property_whole_cores_disjoint_sized_deterministic_aligned() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases = 0;
    while cases < 400 {
        let packages = 1 + rng.below(2);
        let nodes = 1 + rng.below(2);
        let l3 = 1 + rng.below(4);
        let per_l3 = 1 + rng.below(8);
        let shape = Shape {
            numbering: if rng.below(2) == 0 {
                Numbering::Spread
            } else {
                Numbering::Adjacent
            },
            ..shape(packages, nodes * l3 * per_l3, 1 + rng.below(2), nodes, l3)
        };
        let smt_off = rng.below(2) == 0;
        let topo = topology(&shape);
        let layout = Layout::new(&topo, smt_off, &CpuSet::new());
        let mut left = 100u32;
        let mut requests = Vec::new();
        for n in 0..=rng.below(4) {
            if left == 0 {
                break;
            }
            let p = 1 + rng.below(left);
            left -= p;
            let mut r = req(&format!("s{n}"), Ask::Share(u8::try_from(p).unwrap()));
            if rng.below(2) == 0 {
                r.sdr_unit = Some(4);
            }
            requests.push(r);
        }
        if rng.below(3) == 0 {
            requests.push(req("rest", Ask::Rest));
        }
        let out = allocate(&layout, &requests);
        assert_eq!(out, allocate(&layout, &requests), "not deterministic");
        let needs: usize = requests
            .iter()
            .filter_map(|r| match r.ask {
                Ask::Share(p) => Some(layout.cores_for_share(p)),
                _ => None,
            })
            .sum();
        if needs <= layout.share_cores() {
            assert!(
                out.problems.iter().all(
                    |(i, p)| matches!(p, Problem::NothingLeft) && requests[*i].ask == Ask::Rest
                ),
                "{shape:?} {requests:?}: {:?}",
                out.problems
            );
        }
        let cores: Vec<CpuSet> = layout.cores().map(|(_, c)| c.cpus.clone()).collect();
        let mut seen = CpuSet::new();
        for (r, p) in requests.iter().zip(&out.placements) {
            let Some(p) = p else { continue };
            assert!(
                seen.intersection(&p.cpus).is_empty(),
                "overlap: {shape:?} {requests:?}"
            );
            seen = seen.union(&p.cpus);
            assert!(p.cpus.is_subset(&layout.usable()));
            if let Ask::Share(percent) = r.ask {
                for core in &cores {
                    let inside = core.intersection(&p.cpus).len();
                    assert!(
                        inside == 0 || inside == core.len(),
                        "split core {core} in {}",
                        p.cpus
                    );
                }
                assert_eq!(p.span.cores, layout.cores_for_share(percent));
            }
        }
        // The largest share is placed first, on a fresh host.
        let first = requests
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.ask {
                Ask::Share(p) => Some((layout.cores_for_share(p), i)),
                _ => None,
            })
            .max_by_key(|&(need, i)| (need, std::cmp::Reverse(i)));
        if let Some((need, i)) = first {
            let span = &out.placements[i].as_ref().unwrap().span;
            let group = per_l3 as usize;
            if need % group == 0 {
                assert!(span.whole_groups(), "{shape:?} {need}: {:?}", span.l3);
            }
            if need <= span.largest_node {
                assert_eq!(span.nodes, 1, "{shape:?} {need}");
            }
            if requests[i].sdr_unit.is_some() && need % group == 0 {
                assert!(span.even());
            }
        }
        cases += 1;
    }
}

/// The same requests in a different config order give each service the
/// same CPUs when sizes differ (placement is by size, not by position).
#[test]
fn property_order_of_distinct_sized_shares_does_not_matter() {
    let layout = Layout::new(&topology(&plan_host()), true, &CpuSet::new());
    let requests = vec![
        req("a", Ask::Share(50)),
        req("b", Ask::Share(30)),
        req("c", Ask::Share(15)),
        req("d", Ask::Share(5)),
    ];
    let out = allocate(&layout, &requests);
    let mut reversed = requests.clone();
    reversed.reverse();
    let back = allocate(&layout, &reversed);
    for i in 0..4 {
        assert_eq!(out.placements[i], back.placements[3 - i]);
    }
}

fn part(name: &str, percent: u8, parts: usize, numa: Option<u32>) -> Request {
    Request {
        numa,
        ..req(name, Ask::Part { percent, parts })
    }
}

#[test]
fn instances_split_a_share_each_on_its_own_numa_node() {
    // 2 nodes × 8 cores, L3 groups of 4: four instances of a 100% share,
    // two per node (as per-gpu with two GPUs on each node).
    let layout = Layout::new(&topology(&shape(1, 16, 1, 2, 2)), false, &CpuSet::new());
    let nodes = [Some(0), Some(0), Some(1), Some(1)];
    let requests: Vec<Request> = (0..4)
        .map(|i| part(&format!("w@{i}"), 100, 4, nodes[i]))
        .collect();
    let out = allocate(&layout, &requests);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let got: Vec<String> = (0..4).map(|i| cpus(&out, i)).collect();
    assert_eq!(got, ["0-3", "4-7", "8-11", "12-15"]);
    for (i, node) in nodes.iter().enumerate() {
        let span = &out.placements[i].as_ref().unwrap().span;
        assert_eq!(span.numa, Some(set(&node.unwrap().to_string())));
        assert!(span.whole_groups());
    }
}

#[test]
fn an_instance_whose_node_is_full_goes_elsewhere_with_a_warning() {
    let layout = Layout::new(&topology(&shape(1, 16, 1, 2, 2)), false, &CpuSet::new());
    // Three parts of 75% (4 cores each, 12 cores) all want node 0 (8 cores).
    let requests: Vec<Request> = (0..3)
        .map(|i| part(&format!("w@{i}"), 75, 3, Some(0)))
        .collect();
    let out = allocate(&layout, &requests);
    assert_eq!(cpus(&out, 0), "0-3");
    assert_eq!(cpus(&out, 1), "4-7");
    assert_eq!(cpus(&out, 2), "8-11");
    assert_eq!(
        out.problems,
        vec![(2, Problem::OffNode { node: 0, need: 4 })]
    );
    assert!(!out.problems[0].1.is_error());
    // An odd split rounds down; a part that does not fit says so.
    let out = allocate(&layout, &[part("a@0", 100, 3, None)]);
    assert_eq!(cpus(&out, 0), "0-4");
    let out = allocate(
        &layout,
        &[
            req("list", Ask::List(set("0-11"))),
            part("b@0", 100, 2, None),
        ],
    );
    assert_eq!(
        out.problems[0].1.to_string(),
        "1/2 of 100% is 8 cores of the 16 usable, but only 4 are free after the lists and larger shares; lower the shares"
    );
}
