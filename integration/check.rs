//! `venussup check`: config validation and the printed plan.

mod common;

use common::venussup;

#[test]
fn check_answers() {
    let out = venussup(&["check", "--config", "/nonexistent.toml"]);
    assert!(out.code.is_some());
}
