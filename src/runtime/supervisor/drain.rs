//! Drains at run time: the drain command, quiet probe and stop command of
//! a planned stop, as children of the service's user. Which runs when is
//! decided in `runtime/drain.rs`.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::time::Instant;

use super::{Owner, Supervisor};
use crate::runtime::drain;
use crate::status::ExitKind;
use crate::sys::spawn::Output;

/// The most of a quiet probe's output kept for matching.
const QUIET_OUTPUT_MAX: usize = 1 << 20;

impl Supervisor {
    /// Starts a drain command or quiet probe of service `i` as its user,
    /// its output to the service's log or, with `capture`, a pipe.
    pub(super) fn drain_helper(&mut self, i: usize, argv: &[String], capture: bool, now: Instant) {
        let output = if capture {
            Output::Pipe
        } else {
            Output::Append(self.services[i].plan.log_file.clone())
        };
        match self.spawn_side(i, argv, output) {
            Ok(child) => {
                let s = &mut self.services[i];
                s.life.drain.helper = Some(child.pid);
                s.drain_output = child.output;
                self.owners.insert(child.pid, Owner::Drain(i));
            }
            Err(e) => {
                let e = e.to_string();
                self.service_transition(i, now, |life, rules| {
                    drain::helper_failed(life, rules, &e, now)
                });
            }
        }
    }

    /// A drain helper of service `i` ended: on to the next phase, or poll
    /// again.
    pub(super) fn drain_helper_exited(&mut self, i: usize, how: ExitKind) {
        let now = Instant::now();
        let output = read_all(self.services[i].drain_output.take());
        let text = String::from_utf8_lossy(&output);
        self.service_transition(i, now, |life, rules| {
            drain::helper_exited(life, rules, how, &text, now)
        });
        self.dirty = true;
    }
}

/// What an exited helper left in its pipe.
fn read_all(pipe: Option<File>) -> Vec<u8> {
    let mut output = Vec::new();
    let Some(mut out) = pipe else {
        return output;
    };
    let _ = nix::fcntl::fcntl(
        &out,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut buf = [0u8; 8192];
    loop {
        match out.read(&mut buf) {
            Ok(n) if n > 0 && output.len() < QUIET_OUTPUT_MAX => {
                output.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    output
}
