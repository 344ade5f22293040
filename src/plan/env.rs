//! The environment of each service and timer, lowest precedence first:
//! `PATH`, `pass_env`, the host `env_file`, `[host.env]`, its own
//! `env_file`, its own `env` (the GPU variables come later, from
//! [`super::placement`]). `env_file`s are read through [`Host::lookups`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Spanned;

use super::DEFAULT_PATH;
use crate::config::Config;
use crate::host::{FileKind, Host};
use crate::util::diag::Diagnostics;
use crate::util::envfile;

/// The environment every service starts from, lowest precedence first:
/// `PATH` (systemd's default), `pass_env` from venussup's own environment,
/// the host `env_file`, then `[host.env]`.
pub(super) fn base_env(
    config: &Config,
    host: &Host,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([("PATH".to_string(), DEFAULT_PATH.to_string())]);
    for key in &config.host.pass_env {
        if let Some(v) = host.own_env.get(key) {
            env.insert(key.clone(), v.clone());
        }
    }
    if let Some(file) = &config.host.env_file {
        env.extend(read_env_file(config, host, file, diags));
    }
    env.extend(
        config
            .host
            .env
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), v.clone())),
    );
    env
}

/// Reads an `env_file`; a file that cannot be read here is a warning (it
/// may hold secrets only the production host has).
fn read_env_file(
    config: &Config,
    host: &Host,
    file: &Spanned<PathBuf>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let path = config.dir().join(file.get_ref());
    match host.lookups.read_file(&path) {
        Ok(text) => envfile::parse(&text).unwrap_or_else(|bad| {
            diags.error(
                file.span(),
                format!("{}:{}: {}", path.display(), bad.line, bad.why),
            );
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            diags.error(
                file.span(),
                format!("env_file {} is not UTF-8 text ({e})", path.display()),
            );
            BTreeMap::new()
        }
        Err(e) => {
            diags.warning(
                file.span(),
                format!(
                    "cannot read env_file {} here ({e}); its variables are unknown to this check, and a service that needs it will fail to start",
                    path.display()
                ),
            );
            BTreeMap::new()
        }
    }
}

/// The environment of one service or timer on top of the host's:
/// its `env_file`, then its `env`.
pub(super) fn own_env(
    config: &Config,
    host: &Host,
    base: &BTreeMap<String, String>,
    file: Option<&Spanned<PathBuf>>,
    env: &BTreeMap<Spanned<String>, String>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut out = base.clone();
    if let Some(file) = file {
        out.extend(read_env_file(config, host, file, diags));
    }
    out.extend(env.iter().map(|(k, v)| (k.get_ref().clone(), v.clone())));
    out
}

/// Whether an `env_file` of the host's or of `own` is not a file here
/// (then an unset `${VAR}` may be one it would set).
pub(super) fn env_files_unread(
    config: &Config,
    host: &Host,
    own: Option<&Spanned<PathBuf>>,
) -> bool {
    config.host.env_file.iter().chain(own).any(|f| {
        !matches!(
            host.lookups.stat(&config.dir().join(f.get_ref())),
            FileKind::File { .. }
        )
    })
}
