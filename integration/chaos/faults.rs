//! What the soak does: the stand-in config, the broken variants a reload
//! must refuse, the faults and their weights, and the seeded generator
//! that picks them (the seed replays a run).

/// Stand-ins: a sealer, an instance group of two workers and a confined
/// worker (the workers each leave a grandchild in a session of its own, as
/// daemons do), and a gated pledge whose runs last long enough to be
/// killed and to outlive a killed supervisor (8 s runs every 3 s: a run
/// is going most of the time).
pub const SERVICES: &str = r#"
[[service]]
name = "sealer"
command = ["{bin}", "standin", "--name", "sealer"]
stable_after = "500ms"
backoff_max = "2s"
stop_timeout = "5s"

[[service]]
name = "w"
instances = 2
command = ["{bin}", "standin", "--name", "w{i}", "--hold-grandchild", "{dir}/hold-w{i}"]
after = ["sealer"]
stable_after = "500ms"
backoff_max = "2s"
stop_timeout = "5s"

[[service]]
name = "c"
cpus = "50%"
command = ["{bin}", "standin", "--name", "c", "--hold-grandchild", "{dir}/hold-c"]
stable_after = "500ms"
backoff_max = "2s"
stop_timeout = "5s"

[[timer]]
name = "pledge"
command = ["{bin}", "standin", "--name", "pledge", "--exit-after", "8s"]
every = "3s"
timeout = "30s"
after = ["sealer"]

[timer.gate]
command = ["/bin/echo", "0"]
target = 4
"#;

/// The broken configs a reload must refuse, each from the valid text.
pub const BROKEN: [(&str, &str, &str); 6] = [
    ("a TOML syntax error", "[[timer]]\n", "[[timer]\n"),
    (
        "an unknown field",
        "stop_timeout = \"5s\"\n",
        "stop_timeout = \"5s\"\nrestart_dealy = \"1s\"\n",
    ),
    (
        "an unknown service in `after` ",
        "after = [\"sealer\"]\nstable",
        "after = [\"nosuch\"]\nstable",
    ),
    (
        "an overflowing duration (issue #18 item 4: durations bounded at parse time)",
        "backoff_max = \"2s\"",
        "backoff_max = \"584542046090y\"",
    ),
    (
        "`every = \"1ns\"` (issue #18 item 8)",
        "every = \"3s\"",
        "every = \"1ns\"",
    ),
    (
        "a NUL in an env value (issue #18 item 8)",
        "name = \"sealer\"\n",
        "name = \"sealer\"\nenv = { CHAOS = \"a\\u0000b\" }\n",
    ),
];

/// A small deterministic generator (xorshift64*): the seed replays a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

pub fn seed() -> u64 {
    env_u64("VENUSSUP_CHAOS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        u64::try_from(t.as_nanos() % u128::from(u64::MAX)).unwrap() | 1
    })
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Action {
    KillService,
    TermService,
    KillTimerRun,
    KillVenussup,
    /// `kill -9` of venussup while a timer run is going (waiting for one).
    KillVenussupMidRun,
    StopStartVenussup,
    Reload,
    ReloadBroken,
    Hup,
    HupBroken,
    Garbage,
    Oversized,
    NonReader,
    Idle,
    ManyClients,
}

/// Weights: faults of the services most often, venussup's own death now
/// and then.
pub const ACTIONS: [(Action, usize); 15] = [
    (Action::KillService, 6),
    (Action::TermService, 3),
    (Action::KillTimerRun, 3),
    (Action::KillVenussup, 2),
    (Action::KillVenussupMidRun, 1),
    (Action::StopStartVenussup, 1),
    (Action::Reload, 2),
    (Action::ReloadBroken, 3),
    (Action::Hup, 1),
    (Action::HupBroken, 2),
    (Action::Garbage, 2),
    (Action::Oversized, 2),
    (Action::NonReader, 2),
    (Action::Idle, 2),
    (Action::ManyClients, 1),
];
