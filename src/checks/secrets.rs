//! Secrets on a command line: every user of the host can read a process's
//! arguments in `/proc/PID/cmdline` (unless `/proc` is mounted with
//! `hidepid=invisible`), so a token that `${VAR}` puts into argv is
//! readable by all, whatever the mode of the env file it came from. `check`
//! warns, naming the service, the argument and the variable, and how to
//! keep it out.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use crate::config::Config;
use crate::host::Host;
use crate::plan::expand::variables;
use crate::plan::render::is_secret_name;
use crate::util::diag::Diagnostics;
use crate::util::envfile;

/// How to keep a secret out of argv, said with every warning. venus-worker
/// (filecoin-project/venus-sealer v1.6.0, app/venus-worker/main.go)
/// has no environment variable for `--miner-token`: without the flag it
/// takes `[Sealer] Token` from its repo's config.toml
/// (`<VENUS_WORKER_PATH>/config.toml`; `VENUS_WORKER_CONFIG` before v1.2.7).
const ADVICE: &str = "pass it through the environment if the program reads it there, or from a file of mode 0600 (venus-worker: `[Sealer] Token` in its repo's config.toml, mode 0600, and drop `--miner-token`); otherwise mount /proc with hidepid=invisible";

/// One command to look at: whose it is, where, its own env file and `env`.
struct Command<'a> {
    owner: &'a str,
    argv: &'a Spanned<Vec<String>>,
    env_file: Option<&'a Spanned<PathBuf>>,
    env: Vec<&'a str>,
}

/// Warns for each argument of a service's or timer's command that takes a
/// secret-named variable or one from an env file, or that is a secret flag
/// (`--miner-token=...`).
pub fn check(config: &Config, host: &Host, diags: &mut Diagnostics) {
    let host_file = config
        .host
        .env_file
        .as_ref()
        .map(|f| names_in(config, host, f))
        .unwrap_or_default();
    let host_env: BTreeSet<&str> = config
        .host
        .env
        .keys()
        .map(|k| k.get_ref().as_str())
        .collect();
    // What the host's file sets and `[host.env]` does not replace.
    let from_host_file: BTreeSet<&str> = host_file
        .iter()
        .map(String::as_str)
        .filter(|k| !host_env.contains(k))
        .collect();
    let services = config.services.iter().map(|s| Command {
        owner: s.name.get_ref(),
        argv: &s.command,
        env_file: s.env_file.as_ref(),
        env: s.env.keys().map(|k| k.get_ref().as_str()).collect(),
    });
    let timers = config.timers.iter().map(|t| Command {
        owner: t.name.get_ref(),
        argv: &t.command,
        env_file: t.env_file.as_ref(),
        env: t.env.keys().map(|k| k.get_ref().as_str()).collect(),
    });
    for c in services.chain(timers) {
        let own_file = c
            .env_file
            .map(|f| names_in(config, host, f))
            .unwrap_or_default();
        let from_file = |var: &str| {
            !c.env.contains(&var)
                && (from_host_file.contains(var) || own_file.iter().any(|k| k == var))
        };
        for arg in c.argv.get_ref() {
            if let Some(why) = secret_in(arg, &from_file) {
                warn(diags, c.argv.span(), c.owner, arg, &why);
            }
        }
    }
}

/// Why `arg` would show a secret in argv, if it would.
fn secret_in(arg: &str, from_file: &dyn Fn(&str) -> bool) -> Option<String> {
    for var in variables(arg) {
        if is_secret_name(var) {
            return Some(format!("`${{{var}}}` (a secret by its name)"));
        }
        if from_file(var) {
            return Some(format!("`${{{var}}}` (from an env_file)"));
        }
    }
    let flag = arg.strip_prefix('-')?.trim_start_matches('-');
    let name = flag.split_once('=').map_or(flag, |(n, _)| n);
    is_secret_name(name).then(|| format!("the value of `--{name}`"))
}

fn warn(diags: &mut Diagnostics, at: Range<usize>, owner: &str, arg: &str, why: &str) {
    diags.warning(
        at,
        format!(
            "the argument `{arg}` of `{owner}` puts {why} on its command line, which every user of this host can read in /proc/PID/cmdline; {ADVICE}"
        ),
    );
}

/// The variable names an env file sets; none when it cannot be read or
/// parsed here (the plan reports that).
fn names_in(config: &Config, host: &Host, file: &Spanned<PathBuf>) -> Vec<String> {
    host.lookups
        .read_file(&config.dir().join(file.get_ref()))
        .ok()
        .and_then(|text| envfile::parse(&text).ok())
        .map(|vars| vars.into_keys().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::lookups::InMemory;
    use std::path::Path;

    fn warnings(text: &str, env_file: &str) -> Vec<String> {
        let path = Path::new("/etc/venussup/v.toml");
        let host = Host::in_memory(
            InMemory::new()
                .program("/bin/w")
                .file("/etc/venussup/miner.env", env_file),
        );
        let mut diags = Diagnostics::new(path, text);
        let config = crate::config::parse(path, text, &mut diags).unwrap();
        let mut found = Diagnostics::new(path, text);
        check(&config, &host, &mut found);
        found.into_sorted().into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn a_secret_or_env_file_value_in_argv_is_warned_with_its_service_argument_and_variable() {
        let text = r#"
[host]
env_file = "miner.env"
env = { OVERRIDDEN = "x" }

[[service]]
name = "worker"
command = ["/bin/w", "run", "--miner-token=${MINER_TOKEN}", "--addr=${ADDR}", "--x=${OVERRIDDEN}", "--y=${MINE}"]
env = { MINE = "1" }

[[timer]]
name = "pledge"
command = ["/bin/w", "--password", "${API_KEY}", "--plain=${MINE}"]
every = "10min"
env = { API_KEY = "k", MINE = "m" }
"#;
        let found = warnings(text, "MINER_TOKEN=t\nADDR=/ip4/1.2.3.4\nOVERRIDDEN=y\n");
        let about = |needle: &str| found.iter().filter(|m| m.contains(needle)).count();
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(
            about("the argument `--miner-token=${MINER_TOKEN}` of `worker` puts `${MINER_TOKEN}` (a secret by its name)"),
            1
        );
        assert_eq!(
            about("`--addr=${ADDR}` of `worker` puts `${ADDR}` (from an env_file)"),
            1
        );
        assert_eq!(
            about("`--password` of `pledge` puts the value of `--password`"),
            1
        );
        assert_eq!(about("`${API_KEY}` of `pledge` puts `${API_KEY}`"), 1);
        assert!(found.iter().all(|m| m.contains("/proc/PID/cmdline")
            && m.contains("hidepid=invisible")
            && m.contains("[Sealer] Token")));
    }
}
