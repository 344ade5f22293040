//! What the fuzz targets share: splitting one input into several files,
//! the in-memory host a config is planned against, and running a config
//! through `venussup check`'s pure steps.

use std::path::Path;

pub mod control_server;
pub mod metrics_http;
pub mod script;

use venussup::checks::venus;
use venussup::commands::capacity::{self, Facts, SealPath};
use venussup::config;
use venussup::config::values::ByteSize;
use venussup::host::gpu::{Discovery, Gpu, Source};
use venussup::host::lookups::InMemory;
use venussup::host::topology::Topology;
use venussup::host::Host;
use venussup::plan::{self, render};
use venussup::util::diag::Diagnostics;

/// Where the fuzzed config "is": relative paths are taken from its folder.
pub const CONFIG: &str = "/etc/venussup/venussup.toml";

/// Byte that separates the files of one input (never in valid UTF-8, so a
/// text file loses nothing it could hold).
pub const SEPARATOR: u8 = 0xff;

/// The first `n` parts of `data` split at [`SEPARATOR`]; missing parts are
/// empty, the last part keeps any further separators.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(n, |&b| b == SEPARATOR).collect();
    parts.resize(n, &[]);
    parts
}

/// A sealing host as the plan tests use: the Venus programs installed, a
/// miner env file, two NVIDIA GPUs, and `topology`'s CPUs.
pub fn sealing_host(topology: Topology) -> Host {
    let lookups = InMemory::new()
        .program("/usr/local/bin/venus-worker")
        .program("/usr/local/bin/venus-sealer")
        .folder("/var/lib/venus")
        .file("/etc/venussup/miner.env", "MINER_TOKEN=t0ken\n")
        .user("venus")
        .group("venus");
    Host {
        online_cpus: Some(topology.online()),
        topology: Some(topology),
        gpus: Discovery {
            gpus: (0..2)
                .map(|i| Gpu {
                    bus_id: Some(format!("0000:{:02x}:00.0", i + 1)),
                    model: Some("NVIDIA GeForce RTX 3060 Ti".into()),
                    numa: Some(i),
                    ..Gpu::numbered(i)
                })
                .collect(),
            source: Source::Driver,
            warnings: Vec::new(),
        },
        ..Host::in_memory(lookups)
    }
}

/// What `venussup check` does with a config text, minus the host probe:
/// parse, plan, the capacity plan, the Venus checks, and every rendering
/// of the result.
/// Asserts that each diagnostic points inside the text.
pub fn check(text: &str, host: &Host) {
    let path = Path::new(CONFIG);
    let mut diags = Diagnostics::new(path, text);
    let Some(config) = config::parse(path, text, &mut diags) else {
        assert!(
            diags.has_errors(),
            "a config that does not parse has an error"
        );
        render_diagnostics(text, diags);
        return;
    };
    let plan = plan::resolve(&config, host, &mut diags);
    // The capacity plan `check` computes with a `[capacity]` table, on a
    // 1 TiB host with 10 TiB of seal disk.
    let assessed = config.capacity.as_ref().and_then(|_| {
        let topology = host.topology.clone()?;
        let facts = Facts {
            mem_total: 1 << 40,
            numa_nodes: topology.numa_nodes().into_keys().collect(),
            topology,
            seal_paths: vec![SealPath {
                path: "/mnt/seal".into(),
                free: ByteSize(10 << 40),
            }],
        };
        capacity::assess_facts(Some((&config, &plan)), facts, None).ok()
    });
    if let Some(a) = &assessed {
        std::hint::black_box(capacity::text(a));
        std::hint::black_box(serde_json::to_string(a).expect("a capacity plan serialises"));
    }
    venus::check(
        &config,
        &plan,
        host,
        assessed.as_ref().map(|a| &a.capacity),
        &mut diags,
    );
    let shown = render::redacted(plan);
    std::hint::black_box(render::text(&shown));
    std::hint::black_box(serde_json::to_string(&shown).expect("a plan serialises"));
    render_diagnostics(text, diags);
}

pub fn render_diagnostics(text: &str, diags: Diagnostics) {
    let lines = text.split('\n').count();
    for d in diags.into_sorted() {
        if let Some(p) = d.position {
            assert!(
                p.line >= 1 && p.line <= lines && p.column >= 1,
                "{d} points outside the {lines}-line text"
            );
        }
        std::hint::black_box(d.to_string());
    }
}

/// Ignores SIGPIPE, as the daemon does (Rust's runtime ignores it before
/// `main`; libFuzzer's `main` does not): a write to a closed socket, the
/// server's or a client's, is EPIPE, not the end of the process.
pub fn ignore_sigpipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SIG_IGN runs no handler, so nothing async-signal-unsafe
        // can run; nothing else in this process handles SIGPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    });
}

/// What a client's non-blocking socket takes of `bytes`: 0 when it is
/// full, or when the server closed it (EPIPE, a reset).
pub fn client_write(mut to: impl std::io::Write, bytes: &[u8]) -> usize {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, WouldBlock};
    match to.write(bytes) {
        Ok(k) => k,
        Err(e) if matches!(e.kind(), WouldBlock | BrokenPipe | ConnectionReset) => 0,
        Err(e) => panic!("client write: {e}"),
    }
}

/// The tokens of `set` whose descriptor is ready now: the loop's `poll`
/// with a zero timeout (it does not wait with requests pending, and a
/// script has no one else to wait for).
pub fn ready_now<T: Copy>(
    set: &[(T, std::os::fd::BorrowedFd<'_>, nix::poll::PollFlags)],
) -> Vec<T> {
    use nix::poll::{poll, PollFd, PollTimeout};
    let mut fds: Vec<PollFd<'_>> = set.iter().map(|(_, fd, f)| PollFd::new(*fd, *f)).collect();
    // libFuzzer's timer (SIGALRM, for -timeout) may interrupt it.
    while let Err(e) = poll(&mut fds, PollTimeout::ZERO) {
        assert_eq!(e, nix::errno::Errno::EINTR, "poll");
    }
    set.iter()
        .zip(&fds)
        .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
        .map(|(entry, _)| entry.0)
        .collect()
}
