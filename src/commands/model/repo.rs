//! A Venus repo folder as both programs use it (`config/local_storage.go`):
//! `config.toml`, and the `api` (a multiaddr) and `token` files the running
//! program writes so that its CLI finds it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `~/` expanded as go-homedir does.
pub fn expand(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest),
        None => PathBuf::from(path),
    }
}

/// The repo's `config.toml`; Go's error when it cannot be read.
pub fn config(repo: &Path) -> Result<toml::Table, String> {
    let path = repo.join("config.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("open {}: {}", path.display(), super::api::go_words(&e)))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("decoding {}: {e}", path.display()))
}

/// `[section] key` of a config as a string or integer.
pub fn key<'a>(table: &'a toml::Table, section: &str, key: &str) -> Option<&'a toml::Value> {
    table.get(section)?.as_table()?.get(key)
}

/// Where the running program's `api` file lives: the config's `DataDir`
/// (the CLI's `GetConfigAPI`), else the repo.
pub fn data_dir(repo: &Path, table: &toml::Table) -> PathBuf {
    table
        .get("DataDir")
        .and_then(toml::Value::as_str)
        .map_or_else(|| repo.to_path_buf(), expand)
}

/// Writes `api` (`/ip4/IP/tcp/PORT` and the sealer's `/http`) and `token`.
pub fn publish(dir: &Path, addr: SocketAddr, suffix: &str, token: &str) -> std::io::Result<()> {
    let ma = format!("/ip4/{}/tcp/{}{suffix}", addr.ip(), addr.port());
    std::fs::write(dir.join("api"), ma)?;
    std::fs::write(dir.join("token"), token)
}

/// The running program's address from its `api` file.
pub fn endpoint(dir: &Path) -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string(dir.join("api"))
        .map_err(|_| "API not running (no endpoint)".to_string())?;
    multiaddr(text.trim())
}

/// How a CLI command finds the running program (`api.GetConfigAPI`): the
/// repo's `config.toml`, its `DataDir`, the `api` file there.
pub fn running(repo: &Path) -> Result<SocketAddr, String> {
    let table = config(repo)?;
    endpoint(&data_dir(repo, &table))
}

/// `/ip4/IP/tcp/PORT[/http]` as a socket address.
pub fn multiaddr(ma: &str) -> Result<SocketAddr, String> {
    crate::util::gocli::multiaddr_host_port(ma)
        .and_then(|(h, p)| format!("{h}:{p}").parse().ok())
        .ok_or_else(|| format!("failed to parse multiaddr \"{ma}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_file_names_where_the_program_listens() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            endpoint(dir.path()).unwrap_err(),
            "API not running (no endpoint)"
        );
        publish(dir.path(), "127.0.0.1:2345".parse().unwrap(), "/http", "t").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("api")).unwrap(),
            "/ip4/127.0.0.1/tcp/2345/http"
        );
        assert_eq!(
            endpoint(dir.path()).unwrap(),
            "127.0.0.1:2345".parse().unwrap()
        );
        let e = config(dir.path()).unwrap_err();
        assert!(e.ends_with("config.toml: no such file or directory"), "{e}");
    }
}
