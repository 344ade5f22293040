//! Copies of the shipped examples for tests that run them: each
//! `(from, to)` replaced (paths, ports, timings), written as the config of
//! a fresh [`Setup`].
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

use std::fs;
use std::net::TcpListener;

use super::daemon::Setup;
use super::project_file;

/// `N` distinct ports nothing listens on now. Another process could take
/// one before the daemon binds it; they are ephemeral ports (from 32768
/// up), never those of a demo someone runs (2345x).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// `examples/NAME` with each `(from, to)` replaced, written as the config
/// of a fresh [`Setup`] (`{dir}` stands for its folder).
pub fn example_copy(name: &str, replace: &[(String, String)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut text = fs::read_to_string(project_file(&format!("examples/{name}"))).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from.as_str()), "{name} has no `{from}`");
        text = text.replace(
            from.as_str(),
            &to.replace("{dir}", dir.path().to_str().unwrap()),
        );
    }
    fs::write(dir.path().join("venussup.toml"), text).unwrap();
    Setup { dir }
}

pub fn pair(from: &str, to: impl Into<String>) -> (String, String) {
    (from.to_string(), to.into())
}
