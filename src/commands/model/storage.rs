//! `storage attach`, the same in both programs (`app/venus-worker/storage.go`,
//! `app/venus-sealer/storage.go`): with `--init`, make the folder and write
//! its `sectorstore.json` (refused when one is there: `path is already
//! initialized`; `--seal` or `--store` required); then the running program
//! opens the path (`stores/local.go` `OpenPath`: reading its
//! `sectorstore.json`) and records it in its repo's `storage.json`
//! (`config/local_storage.go`, `SetStorage`). At every start both programs
//! open each recorded path again (`stores/local.go`, `open`, from
//! `NewLocal`): one that is gone (not mounted) fails the start with
//! `opening path P: ...`.

use std::path::Path;

use crate::util::gocli::{Flag, Parsed};

pub const ATTACH: &[Flag] = &[
    Flag::switch("init", false),
    Flag::value("weight", "10"),
    Flag::switch("seal", false),
    Flag::switch("store", false),
    Flag::value("groups", ""),
    Flag::value("allow-to", ""),
];

const META: &str = "sectorstore.json";

/// `storage attach ARGS`: the running program first, then the path.
pub fn attach(repo: &Path, args: &[String]) -> Result<(), String> {
    let addr = super::repo::running(repo)?;
    let path = init(&super::flags(args, ATTACH)?)?;
    super::api::call(addr, &format!("storage-add-local {path}")).map(drop)
}

/// The CLI's half, after it found the running program: the path to attach.
fn init(flags: &Parsed) -> Result<String, String> {
    let Some(p) = flags.rest.first() else {
        return Err("must specify storage path to attach".into());
    };
    let path = super::repo::expand(p);
    if flags.on(ATTACH, "init") {
        std::fs::create_dir_all(&path).map_err(|e| format!("mkdir {p}: {e}"))?;
        if path.join(META).exists() {
            return Err("path is already initialized".into());
        }
        let (seal, store) = (flags.on(ATTACH, "seal"), flags.on(ATTACH, "store"));
        if !(seal || store) {
            return Err("must specify at least one of --store or --seal".into());
        }
        let meta = format!(
            "{{\n  \"ID\": \"model-{}\",\n  \"Weight\": {},\n  \"CanSeal\": {seal},\n  \"CanStore\": {store}\n}}",
            std::process::id(),
            flags.get(ATTACH, "weight")
        );
        std::fs::write(path.join(META), meta).map_err(|e| {
            format!(
                "persisting storage metadata ({}): {e}",
                path.join(META).display()
            )
        })?;
    }
    Ok(path.display().to_string())
}

/// `OpenPath`: the path's `sectorstore.json` must be readable.
fn open(p: &str) -> Result<(), String> {
    std::fs::read(Path::new(p).join(META))
        .map(drop)
        .map_err(|e| {
            format!(
                "reading storage metadata for {p}: open {p}/{META}: {}",
                super::api::go_words(&e)
            )
        })
}

const STORAGE: &str = "storage.json";

/// The paths recorded in `<repo>/storage.json`.
fn recorded(repo: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(repo.join(STORAGE)).unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    doc["StoragePaths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["Path"].as_str().map(String::from))
        .collect()
}

/// The running program's half (`StorageAddLocal`): open, then record.
pub fn add_local(repo: &Path, p: &str) -> Result<String, String> {
    open(p).map_err(|e| format!("opening local path: {e}"))?;
    let mut paths = recorded(repo);
    if !paths.iter().any(|q| q == p) {
        paths.push(p.to_string());
    }
    let doc = serde_json::json!({
        "StoragePaths": paths.iter().map(|p| serde_json::json!({ "Path": p })).collect::<Vec<_>>()
    });
    std::fs::write(repo.join(STORAGE), doc.to_string())
        .map_err(|e| format!("set storage config: {e}"))?;
    super::log::info(&format!("model: attached local storage {p}"));
    Ok(String::new())
}

/// At start (`NewLocal` → `open`): every recorded path opens, or the start
/// fails.
pub fn reopen(repo: &Path) -> Result<(), String> {
    for p in recorded(repo) {
        open(&p).map_err(|e| format!("opening path {p}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attached_path_that_is_gone_fails_the_next_start() {
        let repo = tempfile::tempdir().unwrap();
        let seal = tempfile::tempdir().unwrap();
        let p = seal.path().to_str().unwrap().to_string();
        let e = add_local(repo.path(), &p).unwrap_err();
        assert!(
            e.starts_with("opening local path: reading storage metadata for"),
            "{e}"
        );
        std::fs::write(seal.path().join(META), "{}").unwrap();
        add_local(repo.path(), &p).unwrap();
        add_local(repo.path(), &p).unwrap();
        assert_eq!(recorded(repo.path()), std::slice::from_ref(&p));
        reopen(repo.path()).unwrap();
        std::fs::remove_file(seal.path().join(META)).unwrap();
        let e = reopen(repo.path()).unwrap_err();
        assert!(
            e.starts_with(&format!("opening path {p}: reading storage metadata")),
            "{e}"
        );
    }
}
