//! The sealer's sectors, pure: `PledgeSector`'s limit
//! (`storage-sealing/garbage.go`: with `MaxSealingSectors > 0`, a pledge
//! while `CurSealing() >= MaxSealingSectors` fails with `too many sectors
//! sealing (curSealing: N, max: M)`; 0 is no limit), `CurSealing` (the
//! sectors in the staging, sealing and failed groups of
//! `types/sector_state.go` `toStatState`: from Packing to FinalizeSector;
//! Proving is out) and `sectors list`'s table (`app/venus-sealer/sectors.go`
//! with `lib/tablewriter`).
//!
//! The modelled pipeline has one task per state: PreCommit1 (PC1),
//! PreCommit2 (PC2), Committing (C2), then Proving.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Sectors {
    pub max_sealing: u64,
    next: u64,
    /// State and whether a worker holds its task.
    by_id: BTreeMap<u64, (&'static str, bool)>,
}

/// State, the task it waits for, and the state after it.
const PIPELINE: [(&str, &str, &str); 3] = [
    ("PreCommit1", "PC1", "PreCommit2"),
    ("PreCommit2", "PC2", "Committing"),
    ("Committing", "C2", "Proving"),
];

impl Sectors {
    pub fn new(max_sealing: u64) -> Sectors {
        Sectors {
            max_sealing,
            ..Sectors::default()
        }
    }

    pub fn cur_sealing(&self) -> u64 {
        self.by_id.values().filter(|(s, _)| *s != "Proving").count() as u64
    }

    /// `PledgeSector`: the new sector's number, or the limit's error.
    pub fn pledge(&mut self) -> Result<u64, String> {
        let cur = self.cur_sealing();
        if self.max_sealing > 0 && cur >= self.max_sealing {
            return Err(format!(
                "too many sectors sealing (curSealing: {cur}, max: {})",
                self.max_sealing
            ));
        }
        self.next += 1;
        self.by_id.insert(self.next, ("PreCommit1", false));
        Ok(self.next)
    }

    /// The first sector waiting for one of `tasks` (short names), now held.
    pub fn take(&mut self, tasks: &[&str]) -> Option<(u64, &'static str)> {
        let (id, task) = self.by_id.iter().find_map(|(id, (state, held))| {
            let (_, task, _) = PIPELINE.iter().find(|(s, _, _)| s == state)?;
            (!held && tasks.contains(task)).then_some((*id, *task))
        })?;
        if let Some(e) = self.by_id.get_mut(&id) {
            e.1 = true;
        }
        Some((id, task))
    }

    /// A held task ended: the sector moves on (`done`) or waits again.
    pub fn finish(&mut self, id: u64, done: bool) {
        if let Some((state, held)) = self.by_id.get_mut(&id) {
            *held = false;
            if done {
                if let Some((_, _, next)) = PIPELINE.iter().find(|(s, _, _)| s == state) {
                    *state = next;
                }
            }
        }
    }

    /// `sectors list` without `--fast`: ID, State, OnChain, Active,
    /// Expiration, Deals (the model has no chain: not on chain, `n/a`, CC).
    pub fn list(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .by_id
            .iter()
            .map(|(id, (state, _))| {
                [
                    id.to_string(),
                    state.to_string(),
                    "NO".into(),
                    "NO".into(),
                    "n/a".into(),
                    "CC".into(),
                ]
            })
            .collect();
        table(
            &["ID", "State", "OnChain", "Active", "Expiration", "Deals"],
            &rows,
        )
    }
}

/// `lib/tablewriter`'s `Flush`: a column shows only when a row has a value
/// in it (so no sectors print one empty line), each cell padded to the
/// column's widest plus 2.
fn table(header: &[&str; 6], rows: &[[String; 6]]) -> String {
    let shown = !rows.is_empty();
    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].len())
            .chain([header[c].len()])
            .max()
            .unwrap_or(0)
    };
    let mut out = String::new();
    let cells = std::iter::once(header.map(String::from)).chain(rows.iter().cloned());
    for row in cells {
        if shown {
            for (c, cell) in row.iter().enumerate() {
                out.push_str(&format!("{cell:<w$}", w = width(c) + 2));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pledge_at_max_sealing_sectors_is_too_many_and_zero_is_no_limit() {
        let mut s = Sectors::new(2);
        assert_eq!((s.pledge(), s.pledge()), (Ok(1), Ok(2)));
        assert_eq!(
            s.pledge(),
            Err("too many sectors sealing (curSealing: 2, max: 2)".into())
        );
        let mut unlimited = Sectors::new(0);
        assert!((0..50).all(|_| unlimited.pledge().is_ok()));
    }

    #[test]
    fn a_sector_moves_through_its_tasks_and_proving_frees_its_place() {
        let mut s = Sectors::new(1);
        s.pledge().unwrap();
        assert_eq!(s.take(&["PC2", "C2"]), None);
        assert_eq!(s.take(&["PC1"]), Some((1, "PC1")));
        assert_eq!(s.take(&["PC1"]), None, "a held task is not given twice");
        s.finish(1, false);
        assert_eq!(
            s.take(&["PC1"]),
            Some((1, "PC1")),
            "an abandoned task waits again"
        );
        s.finish(1, true);
        assert_eq!(s.take(&["PC2", "C2"]), Some((1, "PC2")));
        s.finish(1, true);
        assert_eq!(s.take(&["PC2", "C2"]), Some((1, "C2")));
        s.finish(1, true);
        assert_eq!(s.cur_sealing(), 0);
        assert_eq!(s.pledge(), Ok(2));
    }

    #[test]
    fn the_list_is_the_tablewriters_and_empty_is_one_blank_line() {
        assert_eq!(Sectors::new(0).list(), "\n");
        let mut s = Sectors::new(0);
        s.pledge().unwrap();
        assert_eq!(
            s.list(),
            "ID  State       OnChain  Active  Expiration  Deals  \n1   PreCommit1  NO       NO      n/a         CC     \n"
        );
    }
}
