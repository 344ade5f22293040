//! Command lines as venus-sealer and venus-worker read them: urfave/cli
//! v2.3.0 (their `go.mod`) hands each level's arguments to Go's `flag`
//! package, which reads flags up to the first argument that is not one
//! (the subcommand, or a positional argument) and fails on a flag the level
//! does not define. So a global flag such as `--repo` must come before the
//! subcommand: `venus-worker run --repo=X` fails with `flag provided but
//! not defined: -repo`. Pure: the model (`venussup model`), the plan (the
//! worker's listen rule) and `check` share it. See docs/venus.md.

use std::collections::BTreeMap;

/// Whether a flag takes a value (`--listen ADDR`) or is a switch (`--commit`,
/// `--commit=false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
}

/// One flag a level of the command line defines, with its default.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
}

impl Flag {
    pub const fn switch(name: &'static str, default: bool) -> Flag {
        Flag {
            name,
            kind: Kind::Bool,
            default: if default { "true" } else { "false" },
        }
    }
    pub const fn value(name: &'static str, default: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Value,
            default,
        }
    }
}

/// The flags given at one level and what follows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Flags given, by name; a switch as `"true"`/`"false"`.
    pub set: BTreeMap<String, String>,
    /// The arguments after the last flag (a subcommand and its arguments,
    /// or positional arguments).
    pub rest: Vec<String>,
}

impl Parsed {
    /// The flag's value, or its default in `spec`.
    pub fn get<'a>(&'a self, spec: &'a [Flag], name: &str) -> &'a str {
        self.set.get(name).map_or_else(
            || {
                spec.iter()
                    .find(|f| f.name == name)
                    .map_or("", |f| f.default)
            },
            String::as_str,
        )
    }
    /// A switch's value (its default when not given).
    pub fn on(&self, spec: &[Flag], name: &str) -> bool {
        self.get(spec, name) == "true"
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Reads the flags of one level as Go's `flag.FlagSet.Parse` does: `-x` or
/// `--x`, `=V` or (for a value flag) the next argument; stops at the first
/// non-flag argument or after `--`. The error is Go's message.
pub fn parse(args: &[String], spec: &[Flag]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        i += 1;
        if arg == "--" {
            break;
        }
        let name = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(format!("bad flag syntax: {arg}"));
        }
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name, None),
        };
        let Some(flag) = spec.iter().find(|f| f.name == name) else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        let value = match (flag.kind, value) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match parse_bool(v) {
                Some(b) => b.to_string(),
                None => {
                    return Err(format!(
                        "invalid boolean value \"{v}\" for -{name}: parse error"
                    ))
                }
            },
            (Kind::Value, Some(v)) => v.to_string(),
            (Kind::Value, None) => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(format!("flag needs an argument: -{name}")),
            },
        };
        out.set.insert(name.to_string(), value);
    }
    out.rest = args[i..].to_vec();
    Ok(out)
}

/// venus-worker's global flags (`app/venus-worker/main.go`, `cli.App.Flags`).
pub const WORKER_GLOBAL: &[Flag] = &[
    Flag::value("repo", "~/.venusworker"),
    Flag::value("panic-reports", "~/.lotusworker"),
    Flag::switch("enable-gpu-proving", true),
];

/// `venus-worker run`'s flags (`app/venus-worker/main.go`, `runCmd`).
pub const WORKER_RUN: &[Flag] = &[
    Flag::value("listen", "0.0.0.0:3456"),
    Flag::switch("no-local-storage", false),
    Flag::switch("no-swap", false),
    Flag::switch("addpiece", true),
    Flag::switch("precommit1", true),
    Flag::switch("unseal", true),
    Flag::switch("precommit2", true),
    Flag::switch("commit", true),
    Flag::switch("replica-update", true),
    Flag::switch("prove-replica-update2", true),
    Flag::switch("regen-sector-key", true),
    Flag::value("parallel-fetch-limit", "5"),
    Flag::value("miner-addr", "127.0.0.1:2345"),
    Flag::value("miner-token", ""),
    Flag::value("timeout", "30m"),
    Flag::value("task-total", "100"),
];

/// What `venus-worker run` was told about where to listen and where its
/// sealer is, read the way venus-worker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRun {
    /// `--listen` as given (default `0.0.0.0:3456`).
    pub listen: String,
    /// `--miner-addr` when given (a multiaddr, `/ip4/IP/tcp/PORT`); else
    /// the repo's `[Sealer] Url` is used.
    pub miner_addr: Option<String>,
}

/// Reads `PROGRAM [global flags] SUB [SUB's flags]` from a service's argv
/// (the program first): `None` when the subcommand is another one. An
/// error is Go's message, which the real program prints before it exits.
pub fn subcommand(
    argv: &[String],
    global: &[Flag],
    sub: &str,
    sub_flags: &[Flag],
) -> Result<Option<(Parsed, Parsed)>, String> {
    let g = parse(argv.get(1..).unwrap_or_default(), global)?;
    if g.rest.first().map(String::as_str) != Some(sub) {
        return Ok(None);
    }
    let s = parse(&g.rest[1..], sub_flags)?;
    Ok(Some((g, s)))
}

/// Reads `venus-worker [global flags] run [run flags]`.
pub fn worker_run(argv: &[String]) -> Result<Option<WorkerRun>, String> {
    Ok(
        subcommand(argv, WORKER_GLOBAL, "run", WORKER_RUN)?.map(|(_, run)| WorkerRun {
            listen: run.get(WORKER_RUN, "listen").to_string(),
            miner_addr: run.set.get("miner-addr").cloned(),
        }),
    )
}

/// venus-sealer's global flags (`app/venus-sealer/main.go`, `cli.App.Flags`).
pub const SEALER_GLOBAL: &[Flag] = &[
    Flag::value("actor", ""),
    Flag::value("a", ""),
    Flag::value("network", ""),
    Flag::switch("color", false),
    Flag::value("panic-reports", "~/.venussealer"),
    Flag::value("repo", "~/.venussealer"),
];

/// `venus-sealer run`'s flags (`app/venus-sealer/run.go`, `runCmd`).
pub const SEALER_RUN: &[Flag] = &[
    Flag::value("miner-api", ""),
    Flag::switch("enable-gpu-proving", true),
    Flag::switch("nosync", false),
    Flag::switch("manage-fdlimit", true),
];

/// The `IP:PORT` a multiaddr `/ip4/IP/tcp/PORT[/...]` names, read as
/// venus-worker's `extractRoutableIP` does (the 3rd and 5th `/` parts).
pub fn multiaddr_host_port(ma: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = ma.split('/').collect();
    Some((parts.get(2)?.to_string(), parts.get(4)?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn flags_are_read_up_to_the_first_argument_that_is_not_one() {
        let p = parse(
            &v(&["-repo", "/r", "--enable-gpu-proving=false", "run", "--x"]),
            WORKER_GLOBAL,
        )
        .unwrap();
        assert_eq!(p.get(WORKER_GLOBAL, "repo"), "/r");
        assert!(!p.on(WORKER_GLOBAL, "enable-gpu-proving"));
        assert_eq!(p.rest, v(&["run", "--x"]));
        let p = parse(&v(&["--", "-x"]), WORKER_GLOBAL).unwrap();
        assert_eq!(p.rest, v(&["-x"]));
        assert_eq!(p.get(WORKER_GLOBAL, "repo"), "~/.venusworker");
    }

    #[test]
    fn go_flag_errors_are_given_in_gos_words() {
        let e = |args: &[&str]| parse(&v(args), WORKER_RUN).unwrap_err();
        assert_eq!(e(&["--repo=/r"]), "flag provided but not defined: -repo");
        assert_eq!(
            e(&["--commit=no"]),
            "invalid boolean value \"no\" for -commit: parse error"
        );
        assert_eq!(e(&["--listen"]), "flag needs an argument: -listen");
        assert_eq!(e(&["---x"]), "bad flag syntax: ---x");
        // A value flag takes the next argument even if it looks like a flag.
        let p = parse(&v(&["--listen", "--commit"]), WORKER_RUN).unwrap();
        assert_eq!(p.get(WORKER_RUN, "listen"), "--commit");
        // A switch never takes the next argument: `false` is positional.
        let p = parse(&v(&["--commit", "false"]), WORKER_RUN).unwrap();
        assert!(p.on(WORKER_RUN, "commit"));
        assert_eq!(p.rest, v(&["false"]));
    }

    #[test]
    fn a_workers_listen_rule_comes_from_its_run_flags_and_a_global_flag_after_run_fails() {
        let argv = v(&[
            "/usr/local/bin/venus-worker",
            "--repo=/r",
            "run",
            "--miner-addr=/ip4/192.168.1.10/tcp/2345",
            "--commit=false",
        ]);
        assert_eq!(
            worker_run(&argv).unwrap(),
            Some(WorkerRun {
                listen: "0.0.0.0:3456".into(),
                miner_addr: Some("/ip4/192.168.1.10/tcp/2345".into())
            })
        );
        assert_eq!(worker_run(&v(&["w", "storage", "attach"])).unwrap(), None);
        assert_eq!(
            worker_run(&v(&["w", "run", "--repo", "/r"])).unwrap_err(),
            "flag provided but not defined: -repo"
        );
        assert_eq!(
            multiaddr_host_port("/ip4/192.168.1.10/tcp/2345/http"),
            Some(("192.168.1.10".into(), "2345".into()))
        );
        assert_eq!(multiaddr_host_port("127.0.0.1:2345"), None);
    }
}
