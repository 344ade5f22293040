//! `env_file`: `KEY=VALUE` lines, as systemd's `EnvironmentFile=` reads
//! them: blank lines and `#` comments skipped, an optional `export ` prefix,
//! values optionally in single or double quotes.

use std::collections::BTreeMap;

/// A line that is not `KEY=VALUE`, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub text: String,
}

pub fn parse(text: &str) -> Result<BTreeMap<String, String>, BadLine> {
    let mut vars = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let bad = || BadLine {
            line: i + 1,
            text: raw.to_string(),
        };
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad());
        }
        let value = value.trim();
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
                text: "not a variable".into()
            })
        );
    }
}
