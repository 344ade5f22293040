//! `storage attach`, the same in both programs (`app/venus-worker/storage.go`,
//! `app/venus-sealer/storage.go`): with `--init`, make the folder and write
//! its `sectorstore.json` (refused when one is there: `path is already
//! initialized`; `--seal` or `--store` required); then the running program
//! opens the path (`stores/local.go` `OpenPath`: reading its
//! `sectorstore.json`).

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

/// The running program's half (`StorageAddLocal` → `OpenPath`).
pub fn add_local(p: &str) -> Result<String, String> {
    std::fs::read(Path::new(p).join(META)).map_err(|e| {
        format!(
            "opening local path: reading storage metadata for {p}: open {p}/{META}: {}",
            super::api::go_words(&e)
        )
    })?;
    super::log::info(&format!("model: attached local storage {p}"));
    Ok(String::new())
}
