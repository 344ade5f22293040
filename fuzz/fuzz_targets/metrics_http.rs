//! The metrics listener's request reading: a script of events for
//! several real TCP clients of a real `control::http::MetricsServer`,
//! served turn by turn as the supervisor's loop does, each client's answer
//! checked against what HTTP/1.1 makes of what it sent
//! (`venussup_fuzz::metrics_http`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use venussup_fuzz::metrics_http::{script, Harness};

fuzz_target!(|data: &[u8]| {
    Harness::new().run(&script(data));
});
