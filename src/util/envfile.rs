//! `env_file`: `KEY=VALUE` lines, as systemd's `EnvironmentFile=` reads
//! them: blank lines and `#` comments skipped, an optional `export ` prefix,
//! values optionally in single or double quotes.

use std::collections::BTreeMap;

/// A line that is not `KEY=VALUE`, with its 1-based number and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub text: String,
    pub why: String,
}

/// What is wrong with `name` as an environment variable name, if anything:
/// the one rule for `env` keys and `env_file` names (letters, digits and
/// `_`, not starting with a digit, as a shell takes them).
pub fn name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (!valid).then(|| {
        format!(
            "`{name}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
        )
    })
}

pub fn parse(text: &str) -> Result<BTreeMap<String, String>, BadLine> {
    let mut vars = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let bad = |why: String| BadLine {
            line: i + 1,
            text: raw.to_string(),
            why,
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad(format!("`{raw}` is not a KEY=VALUE line")))?;
        let key = key.trim();
        if let Some(why) = name_problem(key) {
            return Err(bad(why));
        }
        let value = value.trim();
        if value.contains('\0') {
            return Err(bad(format!(
                "the value of `{key}` contains a NUL character, which no environment can hold"
            )));
        }
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        vars.insert(key.to_string(), unquoted.to_string());
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_values_quotes_and_comments() {
        let vars = parse("# token\nMINER_TOKEN=abc.def\n\nexport A = \"x y\"\nB='z'\n").unwrap();
        assert_eq!(vars["MINER_TOKEN"], "abc.def");
        assert_eq!(vars["A"], "x y");
        assert_eq!(vars["B"], "z");
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn names_the_bad_line() {
        assert_eq!(
            parse("A=1\nnot a variable\n"),
            Err(BadLine {
                line: 2,
                text: "not a variable".into(),
                why: "`not a variable` is not a KEY=VALUE line".into(),
            })
        );
    }

    #[test]
    fn names_follow_the_env_key_rule_and_values_hold_no_nul() {
        for (text, why) in [
            ("1BAD=x", "`1BAD` is not an environment variable name"),
            ("A-B=x", "`A-B` is not an environment variable name"),
            ("A B=x", "`A B` is not an environment variable name"),
            ("=x", "`` is not an environment variable name"),
            ("A=x\0y", "the value of `A` contains a NUL character"),
        ] {
            let e = parse(&format!("OK=1\n{text}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.why.starts_with(why), "{text}: {}", e.why);
        }
        assert_eq!(parse("_A1=x\n").unwrap()["_A1"], "x");
    }
}
