//! The config loader and the plan: any text as `venussup.toml`, parsed,
//! resolved against an in-memory sealing host (2 sockets × 64 cores, 2
//! GPUs), checked by the Venus rules and rendered as `check` shows it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use venussup::host::topology::sim::Shape;
use venussup::host::Host;

fuzz_target!(|data: &[u8]| {
    static HOST: OnceLock<Host> = OnceLock::new();
    let host = HOST.get_or_init(|| venussup_fuzz::sealing_host(Shape::plan_host().topology()));
    // `config::load` refuses text that is not UTF-8 before parsing.
    if let Ok(text) = std::str::from_utf8(data) {
        venussup_fuzz::check(text, host);
    }
});
