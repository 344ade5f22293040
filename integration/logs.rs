//! `venussup logs NAME [-f] [-n N]`: the last lines, and following across
//! venussup's own rotations of a running daemon's service log: in place
//! (copy, then truncate, while the service writes) and by rename (before a
//! start, `NAME.log` becomes `NAME.log.1` and a new file begins).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::daemon::{wait_file, Setup, WAIT};
use common::{bin, venussup};

/// A service that writes to its log each line the test sends it through
/// a FIFO, so the test decides what is in the log and when.
const ECHO: &str = "[[service]]\nname = \"talk\"\n\
    command = [\"/bin/sh\", \"-c\", \"exec 3<>{dir}/fifo; while read -r l <&3; do echo \\\"$l\\\"; done\"]\n";

/// `venussup logs ... -f` running, its stdout's lines on a channel; killed
/// on drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(setup: &Setup, args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .arg("logs")
            .args(args)
            .args(["--config", setup.config().to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits (bounded) for `want`; returns the lines before it.
    fn expect(&self, want: &str) -> Vec<String> {
        let mut before = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == want => return before,
                Ok(l) => before.push(l),
                Err(_) => panic!("`logs -f` never printed `{want}`; it printed {before:?}"),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `log` is shorter than the 1MiB it was rotated at.
fn await_truncated(log: &std::path::Path) {
    // No event tells a truncation apart from a write: a bounded poll.
    common::eventually(
        &format!("{} truncated", log.display()),
        WAIT,
        std::time::Duration::from_millis(5),
        &String::new,
        || (fs::metadata(log).map_or(0, |m| m.len()) < 1 << 20).then_some(()),
    );
}

#[test]
fn logs_follows_across_a_rotation_in_place_and_a_rotation_by_rename() {
    let setup = Setup::new(ECHO);
    setup.host_line("log = { max_size = \"1MiB\", keep = 2 }"); // the least allowed
    let fifo = setup.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let d = setup.start();
    d.wait_service("talk", "running", |s| s["state"] == "running");
    // Read and write: never blocks, whether or not the shell has it open.
    let mut pipe = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let mut say = |line: &str| pipe.write_all(format!("{line}\n").as_bytes()).unwrap();
    let log = setup.path("logs/talk.log");
    say("one");
    say("two");
    // Without -f: the last line, once both are there.
    let first = Follower::start(&setup, &["talk", "-f", "-n", "100"]);
    first.expect("one");
    first.expect("two");
    drop(first);
    let out = venussup(&[
        "logs",
        "talk",
        "-n",
        "1",
        "--config",
        setup.config().to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "two\n");

    let f = Follower::start(&setup, &["talk", "-f", "-n", "1"]);
    f.expect("two");
    say("three");
    f.expect("three");

    // In place: past 1MiB the daemon copies the file to talk.log.1 and
    // truncates it; the follower reads on from the start.
    say(&"x".repeat(1 << 20));
    wait_file(&setup.path("logs/talk.log.1"));
    // The copy is named just before the truncation: a line said between
    // the two would be lost (copytruncate), so await the truncation.
    await_truncated(&log);
    say("after the truncation");
    f.expect("after the truncation");

    // By rename: stopped, with a log past 1MiB (the service's last
    // words), the next start moves talk.log to talk.log.1.
    setup.cli(&["stop", "talk"]).expect_code(0);
    d.wait_service("talk", "stopped", |s| s["state"] == "stopped");
    let last_words = "last words of the old file, long enough to be rotated at the next start";
    fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(format!("{}\n{last_words}\n", "y".repeat(1 << 20)).as_bytes())
        .unwrap();
    f.expect(last_words);
    let old_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&log).unwrap());
    setup.cli(&["start", "talk"]).expect_code(0);
    d.wait_service("talk", "running", |s| s["state"] == "running");
    say("in the new file");
    f.expect("in the new file");
    assert_ne!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&log).unwrap()),
        old_inode,
        "talk.log was renamed away and begun anew"
    );
    assert!(fs::read_to_string(setup.path("logs/talk.log.1"))
        .unwrap()
        .contains(last_words));
}

#[test]
fn logs_of_an_unknown_name_or_a_bad_one_is_refused() {
    let setup = Setup::new(ECHO);
    let cfg = setup.config();
    let out = venussup(&["logs", "nope", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("nope.log"), "{}", out.stderr);
    let out = venussup(&["logs", "../x", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}
