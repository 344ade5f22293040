//! The cluster file: any text as `cluster.toml`, parsed, each host's
//! config rendered and parsed as `venussup render` and `check --cluster`
//! do, then the rules across hosts (with made-up capacity plans).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use toml::de::DeTable;
use venussup::cluster::{self, rules};
use venussup::util::diag::Diagnostics;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/venussup/cluster.toml");
    let mut diags = Diagnostics::new(path, text);
    let Some(c) = cluster::parse(path, text, &mut diags) else {
        assert!(
            diags.has_errors(),
            "a cluster file that does not parse has an error"
        );
        venussup_fuzz::render_diagnostics(text, diags);
        return;
    };
    for h in &c.hosts {
        // What `render` prints is TOML, and every byte of it points back
        // into the cluster file.
        let (_, errors) = DeTable::parse_recoverable(&h.rendered.text);
        assert!(
            errors.is_empty(),
            "host {} rendered as invalid TOML: {errors:?}\n{}",
            h.name.get_ref(),
            h.rendered.text
        );
        for at in 0..=h.rendered.text.len() {
            assert!(
                h.rendered.source(at) <= text.len(),
                "byte {at} of {}'s text maps outside the file",
                h.name.get_ref()
            );
        }
    }
    let configs: Vec<_> = c.hosts.iter().map(|h| c.config(h, &mut diags)).collect();
    let members: Vec<rules::Member<'_>> = c
        .hosts
        .iter()
        .zip(&configs)
        .enumerate()
        .map(|(i, (host, config))| rules::Member {
            host,
            config: config.as_ref(),
            plan: (i % 3 != 2).then_some(i as u64),
        })
        .collect();
    rules::check(&members, &mut diags);
    venussup_fuzz::render_diagnostics(text, diags);
});
