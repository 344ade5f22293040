//! The env-file parser. What it reads, written back as `export K='V'`
//! lines, reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use venussup::util::envfile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(vars) = envfile::parse(text) else {
        return;
    };
    let written: String = vars
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    assert_eq!(
        envfile::parse(&written).as_ref(),
        Ok(&vars),
        "from {written:?}"
    );
});
