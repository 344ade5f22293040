//! The sysfs topology reader over a fake root: a real machine's snapshot
//! (the hybrid one of `integration/fixtures/topologies`) copied once into
//! a temporary folder; each input overwrites some of its files, the
//! topology is read, shown as `venussup topology` shows it and planned
//! against with `examples/host-a.toml`, then the files are put back.
//!
//! An input is records `[file index: 2 bytes][length: 1 byte][contents]`;
//! the index picks one of the snapshot's files (sorted, modulo their count).
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use venussup::host::topology::{self, render, sim};
use venussup::util::fsroot::FsRoot;

const SNAPSHOT: &str = "../integration/fixtures/topologies/20em64t-hybrid-1p6c2t+2ca4co1t";

struct Root {
    _dir: tempfile::TempDir,
    fs_root: FsRoot,
    /// Every regular file of the snapshot, with its contents.
    files: Vec<(PathBuf, Vec<u8>)>,
    config: String,
}

fn files_under(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("the snapshot is readable")
        .map(|e| e.expect("the snapshot is readable"))
        .collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let kind = entry.file_type().expect("the snapshot is readable");
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            let text = fs::read(entry.path()).expect("the snapshot is readable");
            out.push((entry.path(), text));
        }
    }
}

fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().expect("a temporary folder");
        sim::copy_tree(&manifest.join(SNAPSHOT), dir.path()).expect("the snapshot copies");
        let mut files = Vec::new();
        files_under(dir.path(), &mut files);
        assert!(!files.is_empty());
        let config = fs::read_to_string(manifest.join("../examples/host-a.toml"))
            .expect("the example config");
        Root {
            fs_root: FsRoot::new(dir.path()),
            _dir: dir,
            files,
            config,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let root = root();
    let mut touched = Vec::new();
    let mut rest = data;
    while let [hi, lo, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let index = usize::from(u16::from_be_bytes([*hi, *lo])) % root.files.len();
        fs::write(&root.files[index].0, &tail[..take]).expect("the fake root is writable");
        touched.push(index);
        rest = &tail[take..];
    }
    if let Ok(topo) = topology::read(&root.fs_root) {
        std::hint::black_box(render::render(&topo));
        std::hint::black_box((topo.cores(), topo.tree(), topo.numa_nodes()));
        std::hint::black_box(topo.threads_per_core());
        venussup_fuzz::check(&root.config, &venussup_fuzz::sealing_host(topo));
    }
    for index in touched {
        let (path, text) = &root.files[index];
        fs::write(path, text).expect("the fake root is writable");
    }
});
