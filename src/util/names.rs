//! The one rule for the names venussup makes files and cgroups of: a
//! service's or timer's `name`, and the cgroup it gets.

/// Most characters a config name may have.
pub const MAX_LEN: usize = 64;

/// What is wrong with a config name, if anything: letters, digits, `-`,
/// `_`, `.`, 1 to [`MAX_LEN`] characters, not starting with `.` or `-`, so
/// never `.`, `..`, a path or a cgroup control file. `@` is kept for
/// instances (`worker@0`), which [`instance_problem`] accepts.
pub fn problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name cannot be empty".into());
    }
    if name.len() > MAX_LEN {
        return Some(format!("a name has at most {MAX_LEN} characters"));
    }
    if name.starts_with(['.', '-']) {
        return Some(format!("`{name}` must not start with `.` or `-`"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "`{name}` contains `{c}`; a name may use letters, digits, `-`, `_` and `.`"
        ));
    }
    None
}

/// [`problem`] for a name that may also be an instance's, `NAME@N`.
pub fn instance_problem(name: &str) -> Option<String> {
    match name.split_once('@') {
        Some((base, n)) if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) => Some(format!(
            "`{name}`: after `@` comes the instance's number (`{base}@0`)"
        )),
        Some((base, _)) => problem(base),
        None => problem(name),
    }
}

/// Whether `name` is an instance of `base`: `base@N`.
pub fn is_instance_of(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('@'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_base_at_a_number() {
        assert!(is_instance_of("worker@0", "worker"));
        assert!(is_instance_of("worker@12", "worker"));
        for (name, base) in [
            ("worker", "worker"),
            ("worker@", "worker"),
            ("worker@x", "worker"),
            ("worker2@0", "worker"),
            ("worker@0", "work"),
        ] {
            assert!(!is_instance_of(name, base), "{name} of {base}");
        }
    }

    #[test]
    fn names_are_plain_file_and_cgroup_names() {
        for good in ["sealer", "worker-01", "w_2.a"] {
            assert_eq!(problem(good), None, "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "-x",
            "cpu set",
            "w@0",
            &"x".repeat(65),
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
        assert_eq!(instance_problem("worker@0"), None);
        for bad in ["worker@", "worker@x", "@0", "a/b@1"] {
            assert!(instance_problem(bad).is_some(), "{bad}");
        }
    }
}
