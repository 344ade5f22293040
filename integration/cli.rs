//! What the command line tells about itself: `--version` (the line
//! `venussup upgrade` reads, then the git commit), the bash and zsh
//! completions and the manual page generated from it.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::process::Command;

use common::venussup;
use venussup::runtime::handover::{candidate, FORMAT, VERSION};

#[test]
fn version_keeps_the_line_upgrade_reads_and_names_the_commit() {
    let long = venussup(&["--version"]);
    assert_eq!(long.code, Some(0));
    let lines: Vec<&str> = long.stdout.lines().collect();
    assert_eq!(lines[0], format!("venussup {VERSION}"));
    assert_eq!(
        candidate(&long.stdout).unwrap(),
        (env!("CARGO_PKG_VERSION").to_string(), FORMAT)
    );
    let commit = lines[1].strip_prefix("commit ").expect("a commit line");
    assert!(
        commit == "unknown"
            || commit
                .trim_end_matches("-dirty")
                .bytes()
                .all(|b| b.is_ascii_hexdigit()),
        "{commit}"
    );
    // In a git checkout (this one), the commit is HEAD's.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|h| h.status.success());
    if let Some(head) = head {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(commit.starts_with(&head), "{commit} vs HEAD {head}");
    }
    // -V: the first line alone.
    assert_eq!(venussup(&["-V"]).stdout, format!("{}\n", lines[0]));
}

#[test]
fn bash_loads_the_completions_and_they_know_the_subcommands() {
    let script = venussup(&["completions", "bash"]);
    assert_eq!(script.code, Some(0), "{}", script.stderr);
    for sub in ["logs", "status", "restart", "check"] {
        assert!(script.stdout.contains(sub), "{sub}");
    }
    // Completing `venussup lo` in a real bash.
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &script.stdout).unwrap();
    let out = Command::new("bash")
        .args([
            "-c",
            "source \"$1\"; COMP_WORDS=(venussup lo); COMP_CWORD=1; _venussup venussup lo venussup; echo \"${COMPREPLY[*]}\"",
            "bash",
        ])
        .arg(path.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "logs");
}

#[test]
fn zsh_completions_and_the_manual_page_are_generated_from_the_cli() {
    let zsh = venussup(&["completions", "zsh"]);
    assert_eq!(zsh.code, Some(0));
    assert!(
        zsh.stdout.starts_with("#compdef venussup"),
        "{}",
        zsh.stdout
    );
    assert!(zsh.stdout.contains("logs"));
    let man = venussup(&["manpage"]);
    assert_eq!(man.code, Some(0));
    assert!(man.stdout.contains(".TH venussup 1"), "{}", man.stdout);
    for sub in ["venussup\\-logs", "venussup\\-status", "venussup\\-check"] {
        assert!(man.stdout.contains(sub), "{sub} in the manual page");
    }
}
