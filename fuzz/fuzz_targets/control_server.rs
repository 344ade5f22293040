//! The control server's buffering: a script of events for several real
//! clients of a real `control::server::Server`, served turn by turn as the
//! supervisor's loop does, checked against a model of what each client
//! must get (`venussup_fuzz::control_server`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use venussup_fuzz::control_server::{script, Harness};

fuzz_target!(|data: &[u8]| {
    Harness::new().run(&script(data));
});
