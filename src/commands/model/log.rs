//! Log lines as go-log v2 writes them to stderr (`TIME\tLEVEL\tmain\tMSG`).
//! The model's own notes say `model:` so they are never taken for the
//! real programs' words.

use std::io::Write;

pub fn line(level: &str, msg: &str) {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{now}\t{level}\tmain\t{msg}");
}

pub fn info(msg: &str) {
    line("INFO", msg);
}

pub fn warn(msg: &str) {
    line("WARN", msg);
}
