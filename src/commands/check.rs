//! `venussup check`: validate the config and print the resolved plan.

use std::path::Path;

use crate::fsroot::FsRoot;

pub fn run(_config: &Path, _fs_root: &FsRoot, _json: bool) -> u8 {
    super::not_yet("check", 3)
}
