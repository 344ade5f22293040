//! The layers of `src/` and what never imports what (ARCHITECTURE.md):
//! read from the source's `crate::` paths, so a new cycle or a call into
//! the kernel from the pure plan fails here, not in review.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it must never name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "util",
        &[
            "config", "capacity", "host", "plan", "checks", "sys", "smt", "runtime", "status",
            "control", "commands",
        ],
    ),
    (
        "config",
        &["host", "plan", "sys", "runtime", "status", "commands"],
    ),
    (
        "cluster",
        &[
            "host", "plan", "sys", "smt", "runtime", "status", "control", "commands",
        ],
    ),
    ("sys", &["config", "plan", "runtime", "commands"]),
    ("status", &["runtime", "plan", "commands"]),
    ("control", &["runtime", "plan", "commands"]),
];

/// Modules that are pure: no filesystem, no syscalls.
const PURE: &[&str] = &["plan", "checks", "capacity", "cluster"];
/// What a pure module may not name outside its tests.
const EFFECTS: &[&str] = &[
    "std::fs",
    "fs::",
    "nix::",
    "libc::",
    "std::process",
    "std::env",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production text of a source file: none for a `tests.rs` or a file
/// under `tests/`, else everything before its `#[cfg(test)]` module, less
/// comment lines.
fn production(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    if rel.file_name().is_some_and(|n| n == "tests.rs")
        || rel.components().any(|c| c.as_os_str() == "tests")
    {
        return String::new();
    }
    let text = fs::read_to_string(path).unwrap();
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module of each file (`src/plan/cpus.rs` → `plan`); `None` for
/// `lib.rs` and `main.rs`.
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Every `crate::NAME` in a text.
fn crate_refs(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .filter(|(i, _)| {
            text[..*i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Module → (module it names → a file that names it).
fn edges() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(f) else { continue };
        let entry = edges.entry(m.clone()).or_default();
        for r in crate_refs(&production(f)) {
            if r != m && modules.contains(&r) {
                entry.entry(r).or_insert_with(|| f.clone());
            }
        }
    }
    edges
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let edges = edges();
    let mut cycles = Vec::new();
    for start in edges.keys() {
        // Depth-first from `start`, remembering the path, until it comes back.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    cycles.push(format!("{} → {start}", path.join(" → ")));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn layers_name_only_what_is_below_them() {
    let edges = edges();
    let mut wrong = Vec::new();
    for (m, deps) in &edges {
        for (dep, file) in deps {
            let forbidden = FORBIDDEN
                .iter()
                .any(|(from, never)| from == m && never.contains(&dep.as_str()));
            if forbidden || dep == "commands" {
                wrong.push(format!("{m} names {dep} in {}", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layer rules broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_plan_and_the_checks_make_no_syscall_and_read_no_file() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        if !module_of(f).is_some_and(|m| PURE.contains(&m.as_str())) {
            continue;
        }
        let text = production(f);
        for (n, line) in text.lines().enumerate() {
            let hit = EFFECTS.iter().any(|effect| {
                line.match_indices(effect).any(|(i, _)| {
                    line[..i]
                        .chars()
                        .next_back()
                        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                })
            });
            if hit {
                wrong.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "effects in pure modules:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, production(f).lines().count()))
        .filter(|(_, n)| *n > 800)
        .map(|(f, n)| format!("{} ({n} lines)", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "files over 800 lines:\n{}",
        long.join("\n")
    );
}
