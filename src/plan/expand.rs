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

pub fn expand(arg: &str, env: &BTreeMap<String, String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or(ExpandError::Unclosed)?;
            let name = &r[..end];
            let value = env
                .get(name)
                .ok_or_else(|| ExpandError::Unset(name.to_string()))?;
            out.push_str(value);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
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
}
