//! Start order: every service after those it names in `after`; between
//! services free to start, the order of the config file.

/// `deps[i]` lists the indices service `i` starts after. Returns the
/// indices in start order; services caught in a cycle (reported by config
/// validation) come last, in file order, so the order is always complete.
pub fn start_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !placed[i] && deps[i].iter().all(|&d| d == i || placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                order.extend((0..n).filter(|&i| !placed[i]));
                break;
            }
        }
    }
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
    fn a_cycle_still_yields_every_service() {
        assert_eq!(start_order(&[vec![1], vec![0], vec![]]), vec![2, 0, 1]);
    }
}
