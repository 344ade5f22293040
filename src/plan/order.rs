//! Start order: every service after those it names in `after`; between
//! services free to start, the order of the config file.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// `deps[i]` lists the indices service `i` starts after. Returns the
/// indices in start order; services caught in a cycle (reported by config
/// validation) come last, in file order, so the order is always complete.
///
/// Kahn's algorithm with the ready services in a min-heap: each step takes
/// the first ready service in file order, as a scan from the top would, in
/// O((n + edges) log n) rather than a scan per service.
pub fn start_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut waiting_for = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds.iter().filter(|&&d| d != i) {
            waiting_for[i] += 1;
            dependents[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&i| waiting_for[i] == 0)
        .map(Reverse)
        .collect();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        placed[i] = true;
        order.push(i);
        for &j in &dependents[i] {
            waiting_for[j] -= 1;
            if waiting_for[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    order.extend((0..n).filter(|&i| !placed[i]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_first_then_file_order() {
        // 0 after 2, 1 free, 2 free
        assert_eq!(start_order(&[vec![2], vec![], vec![]]), vec![1, 2, 0]);
        // chain 2 -> 1 -> 0
        assert_eq!(start_order(&[vec![], vec![0], vec![1]]), vec![0, 1, 2]);
        assert_eq!(start_order(&[]), Vec::<usize>::new());
    }

    #[test]
    fn the_first_ready_in_file_order_goes_first() {
        // 0 after 3; 1 after 0; 2 free; 3 free; 4 after itself and 2
        let deps = [vec![3], vec![0], vec![], vec![], vec![4, 2, 2]];
        assert_eq!(start_order(&deps), vec![2, 3, 0, 1, 4]);
        let chain: Vec<Vec<usize>> = (0..100_000).map(|i| vec![(i + 1) % 100_000]).collect();
        let mut tail = chain;
        tail[99_999] = vec![];
        let order = start_order(&tail);
        assert_eq!((order[0], order[99_999]), (99_999, 0));
    }

    #[test]
    fn a_cycle_still_yields_every_service() {
        assert_eq!(start_order(&[vec![1], vec![0], vec![]]), vec![2, 0, 1]);
    }
}
