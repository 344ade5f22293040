//! Puts the git commit this is built from into `venussup --version`
//! (`VENUSSUP_COMMIT`): `git rev-parse`, or `VENUSSUP_COMMIT` from the
//! environment (a build from a tarball), else "unknown". Never fails the
//! build: no git, no repository, or a git that refuses are all "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=VENUSSUP_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = std::env::var("VENUSSUP_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            Some(if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    // Built again when HEAD moves: HEAD itself, the branch it names, and
    // the packed refs (in a worktree, the branch lives in the common dir).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
    }
    if let (Some(common), Some(branch)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        println!("cargo:rerun-if-changed={common}/{branch}");
        // Only a file that exists: cargo reruns the script (and rebuilds
        // the crate) at every build while a watched file is missing.
        let packed = format!("{common}/packed-refs");
        if std::path::Path::new(&packed).exists() {
            println!("cargo:rerun-if-changed={packed}");
        }
    }
    println!("cargo:rustc-env=VENUSSUP_COMMIT={commit}");
}
