//! `venussup topology`: the host's CPU topology as a tree, or as the JSON
//! document other tools read (`{"cpus": [...]}`, one CPU per line).

use crate::host::topology::{self, render, Topology};
use crate::util::fsroot::FsRoot;

use super::{exit, print_stdout};

pub fn run(fs_root: &FsRoot, json: bool) -> u8 {
    let topo = match topology::read(fs_root) {
        Ok(topo) => topo,
        Err(e) => {
            eprintln!("venussup topology: {e}");
            return exit::FAILURE;
        }
    };
    for warning in topo.warnings() {
        eprintln!("venussup topology: warning: {warning}");
    }
    let text = if json {
        match to_json_lines(&topo) {
            Ok(text) => text + "\n",
            Err(e) => {
                eprintln!("venussup topology: failed to write JSON: {e}");
                return exit::FAILURE;
            }
        }
    } else {
        render::render(&topo)
    };
    match print_stdout(&text) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("venussup topology: {e}");
            exit::FAILURE
        }
    }
}

/// The JSON document with one CPU per line, so that it stays readable and
/// greppable on a 128-CPU host.
fn to_json_lines(topo: &Topology) -> Result<String, serde_json::Error> {
    let cpus = topo
        .cpus()
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if cpus.is_empty() {
        "{\"cpus\": []}".to_string()
    } else {
        format!("{{\"cpus\": [\n  {}\n]}}", cpus.join(",\n  "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::topology::Cpu;

    #[test]
    fn json_lines_parse_as_the_serialized_topology() {
        let topo = Topology::new(vec![Cpu::online(0), Cpu::offline(1)]);
        let text = to_json_lines(&topo).unwrap();
        assert_eq!(text.lines().count(), 4);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, serde_json::to_value(&topo).unwrap());
        let empty: serde_json::Value =
            serde_json::from_str(&to_json_lines(&Topology::default()).unwrap()).unwrap();
        assert_eq!(empty, serde_json::json!({"cpus": []}));
    }
}
