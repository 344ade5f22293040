//! venussup against the supervisors operators would otherwise use (s6,
//! runit, supervisord), measured side by side in the same run.
//!
//!     sudo cargo bench --bench supervisors            # the full run, ~4 min
//!     sudo cargo bench --bench supervisors -- --quick # a smoke run
//!
//! Every supervisor runs the same static stamp program (`stamp.c`, built
//! with `cc -static -nostdlib` into the bench's temporary folder), whose
//! first instruction reads CLOCK_MONOTONIC: no C library start-up runs
//! before it. All of them run at the same time and are
//! visited in a new shuffled order each round. It installs nothing: a peer
//! whose programs are missing is skipped with the Debian package to install.
//! See BENCHMARKS.md for what each number means.

mod peers;
mod procfs;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde_json::{json, Value};

use peers::{Kind, Sup};

const STAMP_C: &str = include_str!("stamp.c");
/// How long a stop of `--scale` services may take before it counts as not
/// done (supervisord stops programs a few per second).
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// CLOCK_MONOTONIC in nanoseconds: the clock the stamp program reads.
pub fn mono_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(ts.tv_nsec()).unwrap_or(0)
}

fn secs(s: f64) -> u64 {
    // Durations here are seconds to minutes: far below u64 nanoseconds.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ns = (s * 1e9) as u64;
    ns
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Reaps every exited child: supervisors' orphans come to the bench, a
/// child subreaper.
pub fn reap_orphans() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What every supervisor setup shares.
#[derive(Debug)]
pub struct Ctx {
    pub work: PathBuf,
    pub stamp: PathBuf,
    pub venussup: PathBuf,
}

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    rounds: usize,
    status_samples: usize,
    idle_secs: u64,
    scale: usize,
    scale_rounds: usize,
    orphans: u32,
    orphan_rounds: usize,
    handover_rounds: usize,
    json: PathBuf,
    venussup: PathBuf,
    only: Option<Vec<String>>,
    work_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        rounds: 200,
        status_samples: 100,
        idle_secs: 20,
        scale: 1000,
        scale_rounds: 3,
        orphans: 500,
        orphan_rounds: 5,
        handover_rounds: 10,
        json: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/venussup-bench.json"
        )),
        venussup: PathBuf::from(env!("CARGO_BIN_EXE_venussup")),
        only: None,
        work_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg} needs {what}"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--quick" => {
                a.quick = true;
                a.rounds = 20;
                a.status_samples = 10;
                a.idle_secs = 3;
                a.scale = 100;
                a.scale_rounds = 1;
                a.orphans = 100;
                a.orphan_rounds = 1;
                a.handover_rounds = 3;
            }
            "--rounds" => a.rounds = num(value("a count")?)?,
            "--status-samples" => a.status_samples = num(value("a count")?)?,
            "--idle-secs" => a.idle_secs = num(value("seconds")?)? as u64,
            "--scale" => a.scale = num(value("a count")?)?,
            "--scale-rounds" => a.scale_rounds = num(value("a count")?)?,
            "--orphans" => {
                a.orphans = u32::try_from(num(value("a count")?)?).map_err(|e| e.to_string())?
            }
            "--orphan-rounds" => a.orphan_rounds = num(value("a count")?)?,
            "--handover-rounds" => a.handover_rounds = num(value("a count")?)?,
            "--json" => a.json = PathBuf::from(value("a path")?),
            "--venussup" => a.venussup = PathBuf::from(value("a path")?),
            "--work-dir" => a.work_dir = Some(PathBuf::from(value("a folder")?)),
            "--only" => a.only = Some(value("a list")?.split(',').map(str::to_string).collect()),
            "-h" | "--help" => {
                println!("usage: cargo bench --bench supervisors -- [--quick] [--rounds N] [--status-samples N] [--idle-secs N] [--scale N] [--scale-rounds N] [--orphans N] [--orphan-rounds N] [--handover-rounds N] [--only venussup,s6,runit,supervisord,venussup-unconfined] [--json PATH] [--venussup PATH] [--work-dir DIR (default: /dev/shm when it is tmpfs)]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(a)
}

/// Median, p90, p99, min, max and count of samples in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Summary {
    n: usize,
    median: f64,
    p90: f64,
    p99: f64,
    min: f64,
    max: f64,
}

fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    // Nearest rank: the smallest sample with at least p of them at or below.
    let rank = |p: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let r = (p * n as f64).ceil() as usize;
        v[r.clamp(1, n) - 1]
    };
    Some(Summary {
        n,
        median: if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        },
        p90: rank(0.90),
        p99: rank(0.99),
        min: v[0],
        max: v[n - 1],
    })
}

/// A small xorshift, seeded from the clock: a new order every run.
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn order<T: Copy>(&mut self, items: &[T]) -> Vec<T> {
        let mut v = items.to_vec();
        for i in (1..v.len()).rev() {
            let j = usize::try_from(self.next() % (i as u64 + 1)).unwrap_or(0);
            v.swap(i, j);
        }
        v
    }
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn package_version(pkg: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", pkg])
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn build_stamp(work: &Path) -> Result<PathBuf, String> {
    let src = work.join("stamp.c");
    let out = work.join("stamp");
    fs::write(&src, STAMP_C).map_err(|e| format!("write {}: {e}", src.display()))?;
    let status = Command::new("cc")
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-O2",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .status()
        .map_err(|e| {
            format!("cc (from build-essential) is needed to build the stamp service: {e}")
        })?;
    if !status.success() {
        return Err(
            "cc -static -nostdlib failed (gcc from build-essential; x86_64 or aarch64)".into(),
        );
    }
    Ok(out)
}

/// Whether `dir` is the mount point of a tmpfs.
fn is_tmpfs(dir: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next(), f.next(), f.next());
            point == dir.to_str() && kind == Some("tmpfs")
        })
    })
}

/// Removes a cgroup parent venussup left (it removes its own on exit).
fn remove_cgroup_parent(name: &str) {
    for root in [
        "/sys/fs/cgroup/cpuset",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(root).join(name);
        if !dir.is_dir() {
            continue;
        }
        if let Ok(children) = fs::read_dir(&dir) {
            for c in children.flatten() {
                if c.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(c.path());
                }
            }
        }
        if let Err(e) = fs::remove_dir(&dir) {
            eprintln!(
                "warning: could not remove the cgroup {}: {e}",
                dir.display()
            );
        }
    }
}

fn finish(sup: &mut Sup) {
    sup.kill_all();
    if let Some(p) = &sup.cgroup_parent {
        remove_cgroup_parent(p);
    }
}

fn row_summary(name: &str, s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "  {name:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>6}",
            s.median, s.p90, s.p99, s.min, s.max, s.n
        ),
        None => format!("  {name:<22} {:>8}", "no samples"),
    }
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "  {:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "supervisor", "median", "p90", "p99", "min", "max", "n"
    );
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the benchmark runs supervisors, cgroups and PID namespaces: run it as root");
        std::process::exit(1);
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes this process's
    // attribute: orphans of the supervisors under test come to the bench,
    // which reaps them, instead of to the host's PID 1.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!("warning: could not become a child subreaper");
    }
    // On tmpfs: every supervisor creates thousands of files (logs,
    // supervise folders), and on ext4 creating files within minutes of
    // deleting many (the previous round's) scans the inode table for
    // recently deleted inodes, which dominated start-up times and made them
    // depend on the shuffled order. The filesystem is not under test.
    let parent = args.work_dir.clone().unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if is_tmpfs(&shm) {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    let work = match tempfile::Builder::new()
        .prefix("venussup-bench.")
        .tempdir_in(&parent)
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: a temporary folder: {e}");
            std::process::exit(1);
        }
    };
    let stamp = match build_stamp(work.path()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let venussup = match fs::canonicalize(&args.venussup) {
        Ok(p) if p.is_file() => p,
        _ => {
            eprintln!("error: no venussup binary at {}", args.venussup.display());
            std::process::exit(1);
        }
    };
    let ctx = Ctx {
        work: work.path().to_path_buf(),
        stamp,
        venussup,
    };
    let mut kinds = Vec::new();
    let mut skipped = BTreeMap::new();
    for k in Kind::ALL {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|x| x == k.key()))
        {
            continue;
        }
        let (programs, pkg) = k.needs();
        if let Some(p) = programs.iter().find(|p| !have(p)) {
            println!(
                "skipping {}: `{p}` is missing (apt-get install {pkg})",
                k.key()
            );
            skipped.insert(k.key(), format!("`{p}` missing: apt-get install {pkg}"));
            continue;
        }
        kinds.push(k);
    }
    let mut rng = Shuffle(mono_ns() | 1);
    let mut report = json!({
        "machine": procfs::machine(),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "args": {
            "quick": args.quick, "restart_rounds": args.rounds, "status_samples": args.status_samples,
            "idle_seconds": args.idle_secs, "scale": args.scale, "scale_rounds": args.scale_rounds,
            "orphans": args.orphans, "orphan_rounds": args.orphan_rounds,
            "handover_rounds": args.handover_rounds,
        },
        "skipped": skipped,
    });
    println!(
        "venussup benchmark: {} (work folder {})",
        report["machine"],
        ctx.work.display()
    );
    println!("\nHow each supervisor is configured:");
    let mut configs = serde_json::Map::new();
    for &k in &kinds {
        let version = match k {
            Kind::Venus | Kind::VenusPlain => env!("CARGO_PKG_VERSION").to_string(),
            Kind::S6 => package_version("s6"),
            Kind::Runit => package_version("runit"),
            Kind::Supervisord => package_version("supervisor"),
        };
        println!("  {:<20} {version}: {}", k.key(), k.how());
        configs.insert(k.key().into(), json!({"version": version, "how": k.how()}));
    }
    report["supervisors"] = Value::Object(configs);

    small_phase(&ctx, &args, &kinds, &mut rng, &mut report);
    scale_phase(&ctx, &args, &kinds, &mut rng, &mut report);
    if kinds.contains(&Kind::Venus) {
        orphan_phase(&ctx, &args, &mut report);
        handover_phase(&ctx, &args, &mut report);
    }
    let targets = targets(&report);
    println!("\nTargets (venussup, this run):");
    for t in &targets {
        println!(
            "  [{}] {}: {}",
            if t["met"].as_bool() == Some(true) {
                "met "
            } else {
                "MISS"
            },
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or("")
        );
    }
    report["targets"] = Value::Array(targets);
    if let Some(dir) = args.json.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match serde_json::to_vec_pretty(&report) {
        Ok(bytes) => match fs::write(&args.json, bytes) {
            Ok(()) => println!("\nJSON written to {}", args.json.display()),
            Err(e) => eprintln!("error: writing {}: {e}", args.json.display()),
        },
        Err(e) => eprintln!("error: encoding the report: {e}"),
    }
    reap_orphans();
}

/// 10 services each, all supervisors at once: restart latency, idle cost,
/// memory, status.
fn small_phase(ctx: &Ctx, args: &Args, kinds: &[Kind], rng: &mut Shuffle, report: &mut Value) {
    let n = 10;
    let mut sups: Vec<Sup> = Vec::new();
    for &k in kinds {
        match Sup::prepare(ctx, k, n, "small") {
            Ok(s) => sups.push(s),
            Err(e) => eprintln!("{}: setup failed: {e}", k.key()),
        }
    }
    for s in &mut sups {
        if let Err(e) = s.start() {
            eprintln!("{}: failed to start: {e}", s.kind.key());
        }
    }
    let deadline = mono_ns() + secs(30.0);
    sups.retain_mut(|s| {
        if s.stamps.wait_all(deadline).is_some() {
            true
        } else {
            eprintln!(
                "{}: its {n} services did not all start within 30 s; left out",
                s.kind.key()
            );
            finish(s);
            false
        }
    });
    // Every service must have run steadily for over a second before a kill.
    let steady = secs(1.1);

    // 1. Restart latency.
    println!("\nRestart latency: SIGKILL of a service that ran > 1 s -> first instruction of its replacement (ms), {} rounds (supervisord every 5th), shuffled", args.rounds);
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); sups.len()];
    let mut failed = vec![0usize; sups.len()];
    let idx: Vec<usize> = (0..sups.len()).collect();
    for round in 0..args.rounds {
        for &i in &rng.order(&idx) {
            let s = &mut sups[i];
            // supervisord restarts on its 1 s tick: every 5th round is
            // plenty of samples and keeps the run short.
            if s.kind == Kind::Supervisord && round % 5 != 0 {
                continue;
            }
            let victim = round % n;
            let Some(old) = s.stamps.latest[victim].clone() else {
                continue;
            };
            let ready_at = old.ns + steady;
            let now = mono_ns();
            if now < ready_at {
                std::thread::sleep(Duration::from_nanos(ready_at - now));
            }
            let t0 = mono_ns();
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(old.pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_err()
            {
                failed[i] += 1;
                continue;
            }
            let name = old.name.clone();
            match s.stamps.wait_for(t0 + secs(10.0), |_, st| {
                st.name == name && st.pid != old.pid
            }) {
                Some(new) => lat[i].push(ms(new.ns.saturating_sub(t0))),
                None => failed[i] += 1,
            }
        }
    }
    header("  restart latency (ms)");
    let mut restart = serde_json::Map::new();
    for (i, s) in sups.iter().enumerate() {
        let sum = summarize(&lat[i]);
        println!(
            "{}{}",
            row_summary(s.kind.key(), sum),
            if failed[i] > 0 {
                format!("  ({} not restarted within 10 s)", failed[i])
            } else {
                String::new()
            }
        );
        restart.insert(
            s.kind.key().into(),
            json!({"summary": sum, "failed": failed[i]}),
        );
    }
    report["restart_latency_ms"] = Value::Object(restart);

    // 2. Idle cost: nothing happens for idle_secs; the bench sleeps too.
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<Vec<i32>> = sups.iter().map(|s| s.own_pids(&ctx.stamp)).collect();
    let before: Vec<procfs::Cpu> = pids.iter().map(|p| procfs::cpu(p)).collect();
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let after: Vec<procfs::Cpu> = pids.iter().map(|p| procfs::cpu(p)).collect();
    let tck = procfs::ticks_per_second();
    println!("\nIdle cost over {} s, {n} services each, nothing happening (all processes of the supervisor itself)", args.idle_secs);
    println!(
        "  {:<22} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "supervisor", "processes", "cpu ms", "cpu ms", "wake-ups", "wake-ups"
    );
    println!(
        "  {:<22} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "", "", "(stat)", "(sched)", "total", "per s"
    );
    let mut idle = serde_json::Map::new();
    for (i, s) in sups.iter().enumerate() {
        let ticks = after[i].ticks.saturating_sub(before[i].ticks);
        let run = after[i].run_ns.saturating_sub(before[i].run_ns);
        let wakes = after[i].switches.saturating_sub(before[i].switches);
        let cpu_ms = ticks as f64 * 1000.0 / tck as f64;
        let per_s = wakes as f64 / args.idle_secs as f64;
        println!(
            "  {:<22} {:>9} {:>10.1} {:>10.3} {:>9} {:>9.2}",
            s.kind.key(),
            pids[i].len(),
            cpu_ms,
            ms(run),
            wakes,
            per_s
        );
        idle.insert(
            s.kind.key().into(),
            json!({
                "seconds": args.idle_secs, "processes": pids[i].len(), "cpu_ms_stat": cpu_ms,
                "cpu_ms_schedstat": ms(run), "wakeups": wakes, "wakeups_per_s": per_s,
            }),
        );
    }
    report["idle"] = Value::Object(idle);

    // 3. Memory with 10 services.
    println!("\nMemory of the supervisor's own processes, {n} services");
    println!(
        "  {:<22} {:>9} {:>10} {:>10}",
        "supervisor", "processes", "RSS KiB", "PSS KiB"
    );
    let mut mem = serde_json::Map::new();
    for s in &sups {
        let m = procfs::memory(&s.own_pids(&ctx.stamp));
        println!(
            "  {:<22} {:>9} {:>10} {:>10}",
            s.kind.key(),
            m.processes,
            m.rss_kib,
            m.pss_kib
        );
        mem.insert(s.kind.key().into(), json!(m));
    }
    report["memory_10"] = Value::Object(mem);

    // 5. Status with 10 services.
    let (cli, sock) = status_samples(&sups, args.status_samples, rng);
    print_status(
        &format!("Status round trip, {n} services (ms)"),
        &sups,
        &cli,
        &sock,
        "status_10",
        report,
    );

    // Stop.
    let mut stop = serde_json::Map::new();
    for &i in &rng.order(&idx) {
        let s = &mut sups[i];
        let t = s.stop(Duration::from_secs(60));
        stop.insert(s.kind.key().into(), json!(t.map(ms)));
        finish(s);
    }
    report["stop_10_ms"] = Value::Object(stop);
    for s in &sups {
        s.remove_files();
    }
}

fn status_samples(sups: &[Sup], samples: usize, rng: &mut Shuffle) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut cli = vec![Vec::new(); sups.len()];
    let mut sock = Vec::new();
    let idx: Vec<usize> = (0..sups.len()).collect();
    for _ in 0..samples {
        for &i in &rng.order(&idx) {
            if let Some(t) = sups[i].status_cli() {
                cli[i].push(ms(t));
            }
            if sups[i].kind == Kind::Venus {
                if let Some(t) = sups[i].status_socket() {
                    sock.push(ms(t));
                }
            }
        }
    }
    (cli, sock)
}

fn print_status(
    title: &str,
    sups: &[Sup],
    cli: &[Vec<f64>],
    sock: &[f64],
    key: &str,
    report: &mut Value,
) {
    header(title);
    let mut out = serde_json::Map::new();
    for (i, s) in sups.iter().enumerate() {
        let what = match s.kind {
            Kind::Venus | Kind::VenusPlain => "venussup status --json",
            Kind::S6 => "s6-svstat DIR, once per service",
            Kind::Runit => "sv status DIR...",
            Kind::Supervisord => "supervisorctl status",
        };
        let sum = summarize(&cli[i]);
        println!("{}  {what}", row_summary(s.kind.key(), sum));
        out.insert(
            s.kind.key().into(),
            json!({"command": what, "summary": sum}),
        );
    }
    let raw = summarize(sock);
    println!(
        "{}  raw socket: one request line, one answer line",
        row_summary("venussup (socket)", raw)
    );
    out.insert("venussup-socket".into(), json!({"command": "{\"version\":1,\"command\":\"status\"} over control.sock", "summary": raw}));
    report[key] = Value::Object(out);
}

/// `scale` services, one supervisor at a time in a shuffled order each
/// round: start until all run, memory, status, stop until all are gone.
fn scale_phase(ctx: &Ctx, args: &Args, kinds: &[Kind], rng: &mut Shuffle, report: &mut Value) {
    let n = args.scale;
    let mut up: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut down: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut mem: BTreeMap<&str, Vec<procfs::Memory>> = BTreeMap::new();
    let mut cli: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut sock = Vec::new();
    let mut stop_late: BTreeMap<&str, usize> = BTreeMap::new();
    println!(
        "\nScale: {n} services, {} round(s), supervisors one at a time in shuffled order",
        args.scale_rounds
    );
    for round in 0..args.scale_rounds {
        for k in rng.order(kinds) {
            let mut s = match Sup::prepare(ctx, k, n, &format!("r{round}")) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: setup failed: {e}", k.key());
                    continue;
                }
            };
            let t0 = match s.start() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: failed to start: {e}", k.key());
                    continue;
                }
            };
            match s.stamps.wait_all(t0 + secs(180.0)) {
                Some(last) => up
                    .entry(k.key())
                    .or_default()
                    .push(ms(last.saturating_sub(t0))),
                None => {
                    eprintln!(
                        "{}: {} of {n} services started within 180 s",
                        k.key(),
                        s.stamps.latest.iter().flatten().count()
                    );
                    finish(&mut s);
                    s.remove_files();
                    continue;
                }
            }
            // Let start-up work (snapshots, log watches) settle.
            std::thread::sleep(Duration::from_secs(1));
            mem.entry(k.key())
                .or_default()
                .push(procfs::memory(&s.own_pids(&ctx.stamp)));
            // s6 needs one s6-svstat per service: fewer samples.
            let samples = if k == Kind::S6 { 3 } else { 10 };
            for _ in 0..samples {
                if let Some(t) = s.status_cli() {
                    cli.entry(k.key()).or_default().push(ms(t));
                }
                if k == Kind::Venus {
                    if let Some(t) = s.status_socket() {
                        sock.push(ms(t));
                    }
                }
            }
            match s.stop(STOP_LIMIT) {
                Some(t) => down.entry(k.key()).or_default().push(ms(t)),
                None => *stop_late.entry(k.key()).or_default() += 1,
            }
            finish(&mut s);
            s.remove_files();
        }
    }
    header(&format!(
        "  start: supervisor exec -> all {n} services ran their first instruction (ms)"
    ));
    let mut start_j = serde_json::Map::new();
    for k in kinds {
        let s = up.get(k.key()).and_then(|v| summarize(v));
        println!("{}", row_summary(k.key(), s));
        start_j.insert(k.key().into(), json!(s));
    }
    header(&format!(
        "  stop: stop request -> supervisor and all {n} services gone (ms)"
    ));
    let mut stop_j = serde_json::Map::new();
    for k in kinds {
        let s = down.get(k.key()).and_then(|v| summarize(v));
        let late = stop_late.get(k.key()).copied().unwrap_or(0);
        let note = if late > 0 {
            format!(
                "  ({late} round(s) not done within {} s, then killed)",
                STOP_LIMIT.as_secs()
            )
        } else {
            String::new()
        };
        println!("{}{note}", row_summary(k.key(), s));
        stop_j.insert(
            k.key().into(),
            json!({"summary": s, "not_done_within_limit": late, "limit_s": STOP_LIMIT.as_secs()}),
        );
    }
    println!("\nMemory of the supervisor's own processes, {n} services (median of rounds)");
    println!(
        "  {:<22} {:>9} {:>10} {:>10}",
        "supervisor", "processes", "RSS KiB", "PSS KiB"
    );
    let mut mem_j = serde_json::Map::new();
    for k in kinds {
        let Some(v) = mem.get(k.key()) else { continue };
        let mut v = v.clone();
        v.sort_by_key(|m| m.rss_kib);
        let m = v[v.len() / 2];
        println!(
            "  {:<22} {:>9} {:>10} {:>10}",
            k.key(),
            m.processes,
            m.rss_kib,
            m.pss_kib
        );
        mem_j.insert(k.key().into(), json!(m));
    }
    header(&format!("  status round trip, {n} services (ms)"));
    let mut st_j = serde_json::Map::new();
    for k in kinds {
        let s = cli.get(k.key()).and_then(|v| summarize(v));
        println!("{}", row_summary(k.key(), s));
        st_j.insert(k.key().into(), json!({"summary": s}));
    }
    let raw = summarize(&sock);
    println!("{}", row_summary("venussup (socket)", raw));
    st_j.insert("venussup-socket".into(), json!({"summary": raw}));
    report["scale_services"] = json!(n);
    report["start_n_ms"] = Value::Object(start_j);
    report["stop_n_ms"] = Value::Object(stop_j);
    report["memory_n"] = Value::Object(mem_j);
    report["status_n"] = Value::Object(st_j);
}

/// venussup as PID 1 of a PID namespace; a service double-forks orphans
/// that exit. Measured: when the snapshot counts them all reaped, against
/// when the orphan maker said it was done (its "started" line, written
/// once its intermediate child, the orphans' parent, has exited).
fn orphan_phase(ctx: &Ctx, args: &Args, report: &mut Value) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;

    let n = args.orphans;
    println!("\nOrphans: venussup as PID 1 (unshare --pid --fork --mount-proc), service `venussup standin --orphans {n}`, {} round(s)", args.orphan_rounds);
    if !have("unshare") {
        println!("  skipped: `unshare` is missing (apt-get install util-linux)");
        return;
    }
    let mut after_made = Vec::new();
    let mut from_start = Vec::new();
    let mut zombies_left = Vec::new();
    let mut reaped_counts = Vec::new();
    for round in 0..args.orphan_rounds {
        let root = ctx.work.join(format!("orphans-{round}"));
        let parent = format!("venussup-bench-{}-orphans-{round}", std::process::id());
        let logs = root.join("logs");
        let state = root.join("state");
        if fs::create_dir_all(&logs)
            .and_then(|()| fs::create_dir_all(&state))
            .is_err()
        {
            continue;
        }
        let config = root.join("venussup.toml");
        let text = format!(
            "[host]\nstate_dir = \"{}\"\nlog_dir = \"{}\"\ncgroup_parent = \"{parent}\"\n\n[[service]]\nname = \"orphans\"\ncommand = [\"{}\", \"standin\", \"--name\", \"orphans\", \"--orphans\", \"{n}\"]\ncpus = \"all\"\nrestart = \"never\"\n",
            state.display(),
            logs.display(),
            ctx.venussup.display()
        );
        if fs::write(&config, text).is_err() {
            continue;
        }
        let Ok(notify) = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) else {
            continue;
        };
        let _ = notify.add_watch(
            &state,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        );
        let _ = notify.add_watch(&logs, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE);
        let Ok(out) = fs::File::create(root.join("daemon.out")) else {
            continue;
        };
        let t0 = mono_ns();
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(&ctx.venussup)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("  unshare failed to start");
            continue;
        };
        let deadline = t0 + secs(30.0);
        let (mut made, mut reaped, mut count) = (None, None, 0u64);
        while mono_ns() < deadline && (made.is_none() || reaped.is_none()) {
            if made.is_none()
                && fs::read_to_string(logs.join("orphans.log")).is_ok_and(|t| t.contains("started"))
            {
                made = Some(mono_ns());
            }
            if reaped.is_none() {
                if let Some(c) = fs::read_to_string(state.join("status.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["orphans_reaped"].as_u64())
                {
                    count = c;
                    if c >= u64::from(n) {
                        reaped = Some(mono_ns());
                    }
                }
            }
            let mut fds = [PollFd::new(notify.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100u8));
            let _ = notify.read_events();
        }
        // venussup is the child of unshare; zombies would be its children.
        let vpid = procfs::descendants(i32::try_from(child.id()).unwrap_or(0))
            .into_iter()
            .find(|p| {
                p.pid != i32::try_from(child.id()).unwrap_or(0)
                    && procfs::exe(p.pid).as_deref() == Some(ctx.venussup.as_path())
            })
            .map(|p| p.pid);
        let zombies = vpid.map_or(0, |v| {
            procfs::all()
                .iter()
                .filter(|p| p.ppid == v && p.state == 'Z')
                .count()
        });
        match (made, reaped) {
            (Some(m), Some(r)) => {
                after_made.push((r as f64 - m as f64).max(0.0) / 1e6);
                from_start.push(ms(r - t0));
            }
            _ => eprintln!("  round {round}: made {made:?}, reaped {count} of {n} within 30 s"),
        }
        zombies_left.push(zombies);
        reaped_counts.push(count);
        if let Some(v) = vpid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(v),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let stop_deadline = mono_ns() + secs(30.0);
        loop {
            if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                break;
            }
            if mono_ns() > stop_deadline {
                for p in procfs::descendants(i32::try_from(child.id()).unwrap_or(0))
                    .iter()
                    .rev()
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        reap_orphans();
        remove_cgroup_parent(&parent);
        let _ = fs::remove_dir_all(&root);
    }
    header("  all orphans reaped, after the orphan maker finished (ms; 0 = before the bench saw it finish)");
    let a = summarize(&after_made);
    println!("{}", row_summary("venussup (PID 1)", a));
    let f = summarize(&from_start);
    println!(
        "{}  (from `unshare` exec, including making them)",
        row_summary("venussup (PID 1)", f)
    );
    println!("  zombies left when counted: {zombies_left:?}; reaped per round: {reaped_counts:?}");
    report["orphans"] = json!({
        "orphans": n,
        "reaped_after_maker_done_ms": a,
        "reaped_from_start_ms": f,
        "zombies_left": zombies_left,
        "reaped": reaped_counts,
    });
}

/// venussup alone, 10 and `--scale` services: `upgrade` to another copy of
/// the binary, rounds alternating between two copies. Measured: the
/// handover as the new image reports it (from the old image beginning to
/// write its state to the new one running its loop with every child
/// adopted), and the `upgrade` request's round trip (the new program's
/// `--version` and `check` included). Every service must keep its pid: no
/// new stamp may appear.
fn handover_phase(ctx: &Ctx, args: &Args, report: &mut Value) {
    let copies: Vec<PathBuf> = ["venussup-a", "venussup-b"]
        .iter()
        .map(|n| ctx.work.join(n))
        .collect();
    for c in &copies {
        if let Err(e) = fs::copy(&ctx.venussup, c) {
            eprintln!("handover: failed to copy the binary: {e}");
            return;
        }
    }
    println!(
        "\nHandover: `venussup upgrade` to another copy of the binary, {} rounds, every service kept",
        args.handover_rounds
    );
    header("  handover, old image's state -> new image running its loop (ms)");
    let mut out = serde_json::Map::new();
    let mut trips = Vec::new();
    for n in [10, args.scale] {
        let Ok(mut s) = Sup::prepare(ctx, Kind::Venus, n, "handover") else {
            eprintln!("handover: setup failed");
            continue;
        };
        let started = s.start().map(|t0| s.stamps.wait_all(t0 + secs(180.0)));
        if !matches!(started, Ok(Some(_))) {
            eprintln!("handover: {n} services did not start within 180 s");
            finish(&mut s);
            s.remove_files();
            continue;
        }
        let main = s.main_pid();
        let stamps_before = s.stamps.count;
        let (mut handover, mut round_trip, mut kept, mut lost) = (Vec::new(), Vec::new(), true, 0);
        for round in 0..args.handover_rounds {
            match s.upgrade(&copies[round % 2]) {
                Some((answer, t)) => {
                    handover.push(answer["handover_ms"].as_f64().unwrap_or(f64::NAN));
                    round_trip.push(ms(t));
                    kept &= answer["pid"].as_i64() == main.map(i64::from)
                        && answer["services"].as_u64() == Some(n as u64);
                    lost += answer["lost"].as_array().map_or(0, Vec::len);
                }
                None => kept = false,
            }
        }
        // A restarted service would have stamped again.
        let _ = s.stamps.wait_for(mono_ns() + secs(0.2), |_, _| true);
        kept &= s.stamps.count == stamps_before;
        let sum = summarize(&handover);
        println!(
            "{}{}",
            row_summary(&format!("venussup, {n} services"), sum),
            if kept && lost == 0 {
                String::new()
            } else {
                format!("  (NOT all kept: {lost} lost)")
            }
        );
        trips.push((n, summarize(&round_trip)));
        out.insert(
            n.to_string(),
            json!({"handover_ms": sum, "upgrade_round_trip_ms": summarize(&round_trip), "all_kept": kept && lost == 0}),
        );
        // Stopped by venussup (which removes its cgroups), as every phase.
        if s.stop(STOP_LIMIT).is_none() {
            eprintln!("handover: {n} services not stopped within {STOP_LIMIT:?}; killing them");
        }
        finish(&mut s);
        s.remove_files();
    }
    header("  `upgrade` round trip, the new program's --version and check included (ms)");
    for (n, sum) in trips {
        println!("{}", row_summary(&format!("venussup, {n} services"), sum));
    }
    report["handover"] = Value::Object(out);
}

/// The targets, judged on this run's numbers.
fn targets(r: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut t = |target: &str, met: bool, measured: String| {
        out.push(json!({"target": target, "met": met, "measured": measured}));
    };
    let med = |v: &Value| v["summary"]["median"].as_f64();
    let rl = &r["restart_latency_ms"];
    if let Some(v) = med(&rl["venussup"]) {
        let peers: Vec<(String, f64)> = ["s6", "runit", "supervisord"]
            .iter()
            .filter_map(|p| Some((p.to_string(), med(&rl[*p])?)))
            .collect();
        let best = peers.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        let below = best.is_none_or(|b| v < b.1);
        t(
            "restart latency median <= 1 ms and below the fastest peer",
            v <= 1.0 && below,
            format!(
                "venussup {v:.3} ms{}",
                best.map_or(String::new(), |b| format!(
                    ", fastest peer {} {:.3} ms",
                    b.0, b.1
                ))
            ),
        );
    }
    if let Some(w) = r["idle"]["venussup"]["wakeups"].as_u64() {
        t(
            "0 wake-ups when idle",
            w == 0,
            format!("{w} in {} s", r["idle"]["venussup"]["seconds"]),
        );
    }
    let rss10 = r["memory_10"]["venussup"]["rss_kib"].as_u64();
    let rssn = r["memory_n"]["venussup"]["rss_kib"].as_u64();
    let n = r["scale_services"].as_u64().unwrap_or(0);
    if let Some(a) = rss10 {
        t(
            "RSS <= 4 MiB with 10 services",
            a <= 4096,
            format!("{a} KiB"),
        );
        if let Some(b) = rssn {
            let linear = a as f64 * n as f64 / 10.0;
            t(
                &format!("RSS grows less than linearly to {n} services"),
                (b as f64) < linear,
                format!("{b} KiB at {n} (linear would be {linear:.0} KiB)"),
            );
        }
    }
    if let Some(s) = r["start_n_ms"]["venussup"]["median"].as_f64() {
        t(
            &format!("{n} services running in under 1 s"),
            s < 1000.0,
            format!("{s:.1} ms median"),
        );
    }
    if let Some(p) = r["status_10"]["venussup"]["summary"]["p99"].as_f64() {
        t(
            "status p99 <= 2 ms at 10 services",
            p <= 2.0,
            format!(
                "CLI p99 {p:.3} ms, socket p99 {:.3} ms",
                r["status_10"]["venussup-socket"]["summary"]["p99"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
        );
    }
    for (n, limit) in [(10u64, 50.0), (n, 500.0)] {
        let h = &r["handover"][n.to_string()];
        if let Some(max) = h["handover_ms"]["max"].as_f64() {
            t(
                &format!("handover under {limit} ms at {n} services, every service kept"),
                max < limit && h["all_kept"] == true,
                format!(
                    "median {:.1} ms, max {max:.1} ms",
                    h["handover_ms"]["median"].as_f64().unwrap_or(f64::NAN)
                ),
            );
        }
    }
    if let Some(o) = r["orphans"]["reaped_after_maker_done_ms"]["max"].as_f64() {
        let z = r["orphans"]["zombies_left"]
            .as_array()
            .is_some_and(|a| a.iter().all(|z| z.as_u64() == Some(0)));
        t(
            "all orphans reaped within 100 ms",
            o <= 100.0 && z,
            format!(
                "max {o:.3} ms after the maker finished; zombies left {}",
                r["orphans"]["zombies_left"]
            ),
        );
    }
    out
}
