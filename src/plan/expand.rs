//! `${VAR}` in a command takes the value of VAR from the service's
//! environment, as systemd does in `ExecStart=`; `$$` is a literal `$`.

use std::collections::BTreeMap;

/// Why an argument could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` names a variable the environment does not have.
    Unset(String),
    /// A `${` without its `}`.
    Unclosed,
}

/// A piece of an argument: text as it stands, or a `${NAME}`.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `arg` into its text and its `${NAME}`s (`$$` is the text `$`).
fn pieces(arg: &str) -> Result<Vec<Piece<'_>>, ExpandError> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push(Piece::Text(&rest[..i]));
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push(Piece::Text("$"));
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or(ExpandError::Unclosed)?;
            out.push(Piece::Var(&r[..end]));
            rest = &r[end + 1..];
        } else {
            out.push(Piece::Text("$"));
            rest = after;
        }
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

pub fn expand(arg: &str, env: &BTreeMap<String, String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(arg.len());
    for piece in pieces(arg)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => out.push_str(
                env.get(name)
                    .ok_or_else(|| ExpandError::Unset(name.to_string()))?,
            ),
        }
    }
    Ok(out)
}

/// The variables `arg` takes with `${NAME}` (none when it is malformed).
pub fn variables(arg: &str) -> Vec<&str> {
    pieces(arg)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("TOKEN".to_string(), "t0k".to_string())].into()
    }

    #[test]
    fn expands_braced_variables_and_keeps_the_rest() {
        assert_eq!(
            expand("--miner-token=${TOKEN}", &env()).unwrap(),
            "--miner-token=t0k"
        );
        assert_eq!(expand("plain", &env()).unwrap(), "plain");
        assert_eq!(expand("$$HOME and $x", &env()).unwrap(), "$HOME and $x");
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            expand("${NOPE}", &env()),
            Err(ExpandError::Unset("NOPE".into()))
        );
        assert_eq!(expand("${TOKEN", &env()), Err(ExpandError::Unclosed));
    }

    #[test]
    fn lists_the_variables_an_argument_takes() {
        assert_eq!(variables("--a=${A}:${B}$${C}"), vec!["A", "B"]);
        assert!(variables("${A").is_empty());
    }
}
