use super::*;
use crate::config::EventKind;
use crate::status::{ExitKind, RunResult};

const S: Duration = Duration::from_secs(1);

/// The next image's view of the same moments: both clocks moved on by
/// the same 5 s (an exec takes place on one boot's monotonic clock).
fn later(a: &Anchor) -> Anchor {
    Anchor {
        instant: a.instant + 5 * S,
        mono: Mono(a.mono.0 + 5_000_000_000),
    }
}

fn exit(code: i32, at: u64) -> LastExit {
    LastExit {
        how: ExitKind::Code(code),
        reason: None,
        at,
        ran_secs: 1.5,
    }
}

/// A service draining with a probe, a history and exits: every field set.
fn busy_life(t0: Instant) -> Lifecycle {
    let mut backoff = Backoff::default();
    let policy = crate::runtime::backoff::BackoffPolicy::default();
    backoff.on_death(&policy, Duration::ZERO);
    backoff.on_death(&policy, Duration::ZERO);
    Lifecycle {
        state: ServiceState::Draining {
            pid: Pid::from_raw(4242),
            since: t0 + S,
            until: t0 + 3600 * S,
        },
        ready: true,
        restarts: 7,
        backoff,
        history: [t0, t0 + 2 * S].into_iter().collect(),
        reason: Some("fatal start error: x".into()),
        run_started: Some(t0 + S / 2),
        probe_at: Some(t0 + 3 * S),
        probe_pid: Some(Pid::from_raw(4300)),
        last_exit: Some(exit(1, 1_700_000_000)),
        recent_exits: [exit(1, 1_700_000_000), exit(2, 1_699_999_999)]
            .into_iter()
            .collect(),
        oom_kills: 3,
        fatal: FatalSeen {
            count: 2,
            last: Some(crate::status::FatalLine::new("x", 1_700_000_000)),
        },
        drain: Drain {
            phase: Phase::Quiet,
            helper: Some(Pid::from_raw(4301)),
            next_poll: Some(t0 + 10 * S),
            quiet_since: Some(t0 + 4 * S),
        },
    }
}

#[test]
fn instants_cross_the_exec_exactly() {
    let a = Anchor::now();
    let b = later(&a);
    for t in [
        a.instant,
        a.instant + 90 * S,
        a.instant - 7 * S,
        a.instant + S / 3,
    ] {
        assert_eq!(b.instant(a.mono(t)), t);
    }
}

#[test]
fn a_lifecycle_round_trips_through_the_format() {
    let a = Anchor::now();
    let life = busy_life(a.instant);
    let json = serde_json::to_string(&LifeRecord::of(&life, &a)).unwrap();
    let back = serde_json::from_str::<LifeRecord>(&json)
        .unwrap()
        .lifecycle(&later(&a));
    assert_eq!(format!("{back:?}"), format!("{life:?}"));
    assert_eq!(
        back.backoff.young_deaths(),
        2,
        "the backoff goes on where it was"
    );
}

#[test]
fn every_service_state_round_trips() {
    let a = Anchor::now();
    let t = a.instant + 42 * S;
    let p = Pid::from_raw(9);
    let states = [
        ServiceState::Waiting,
        ServiceState::Blocked {
            reason: "waiting for /mnt/seal".into(),
        },
        ServiceState::Starting {
            pid: p,
            probe_until: t,
        },
        ServiceState::Running { pid: p },
        ServiceState::Backoff { until: t },
        ServiceState::Draining {
            pid: p,
            since: a.instant,
            until: t,
        },
        ServiceState::Stopping {
            pid: p,
            kill_at: Some(t),
        },
        ServiceState::Stopping {
            pid: p,
            kill_at: None,
        },
        ServiceState::Stopped,
        ServiceState::Exited,
        ServiceState::Failed {
            reason: "gave up".into(),
        },
        ServiceState::Done,
    ];
    for s in states {
        let json = serde_json::to_string(&StateRecord::of(&s, &a)).unwrap();
        let back: StateRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.state(&later(&a)), s, "{json}");
    }
}

#[test]
fn a_timer_run_in_progress_round_trips() {
    let a = Anchor::now();
    let t0 = a.instant;
    let state = TimerState {
        due: Some(t0 + 600 * S),
        run: Some(Running {
            pid: Pid::from_raw(77),
            started: t0 - 30 * S,
            kill_at: Some(t0 + 90 * S),
            timed_out: None,
        }),
        asking: None,
        pending: 2,
        next_pending: Some(t0 + 5 * S),
        counts: RunCounts {
            success: 4,
            full: 1,
            failure: 2,
            skipped: 3,
        },
        last: [RunRecord {
            at: 1_700_000_000,
            result: RunResult::Full,
        }]
        .into_iter()
        .collect(),
        gate: Some(GateStatus {
            at: 1_700_000_000,
            in_flight: Some(5),
            target: 6,
            runs: 1,
            error: None,
        }),
    };
    let rec = TimerRecord::of("pledge", &state, &a);
    let json = serde_json::to_string(&rec).unwrap();
    let back = serde_json::from_str::<TimerRecord>(&json)
        .unwrap()
        .timer_state(&later(&a));
    assert_eq!(format!("{back:?}"), format!("{state:?}"));
}

/// A whole handover, as an upgrade writes it.
fn handover() -> (Header, State) {
    let a = Anchor::now();
    let fds = Fds {
        lock: Some(HandedFd { fd: 3, ino: 11 }),
        control: Some(HandedFd { fd: 4, ino: 12 }),
        metrics: None,
    };
    let mut event = Event::new(EventKind::Death, "worker01 died".into());
    event.service = Some("worker01".into());
    let state = State {
        started_at: 1_700_000_000,
        binary: "/usr/local/bin/venussup".into(),
        announced_ready: true,
        orphans_reaped: 12,
        jitter: 0xdead_beef,
        next_watchdog: Some(a.mono),
        services: vec![ServiceRecord {
            name: "worker01".into(),
            life: LifeRecord::of(&busy_life(a.instant), &a),
            start_time: Some(987_654),
            oom_base: Some(0),
            start_again: true,
            confine_warned: true,
            drain_output: Some(HandedFd { fd: 9, ino: 99 }),
        }],
        timers: vec![TimerRecord {
            run_output: Some(OutputRecord {
                pipe: Some(HandedFd { fd: 7, ino: 70 }),
                kept: "too many sectors sealing\n".into(),
            }),
            ..TimerRecord::of("pledge", &TimerState::default(), &a)
        }],
        hooks: vec![HookRecord {
            target: "/usr/local/bin/notify".into(),
            busy: true,
            queue: vec![event],
            counts: HookCounts {
                ok: 1,
                failed: 0,
                dropped: 2,
            },
            run: Some(HookRunRecord {
                pid: 31,
                kill_at: None,
            }),
        }],
        upgrade_client: Some(5),
        control_next_id: 6,
        ..State::default()
    };
    (Header::new(Reason::Upgrade, a.mono, fds), state)
}

#[test]
fn a_whole_handover_round_trips() {
    let (header, state) = handover();
    let bytes = encode(&header, &state).unwrap();
    assert_eq!(
        bytes.iter().filter(|b| **b == b'\n').count(),
        2,
        "two lines"
    );
    let d = decode(&bytes).unwrap();
    assert_eq!(d.header, header);
    let back = d.state.unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&state).unwrap()
    );
    assert_eq!(back.hooks[0].queue[0].message, "worker01 died");
    assert_eq!(
        back.timers[0].run_output.as_ref().unwrap().kept,
        "too many sectors sealing\n"
    );
}

#[test]
fn within_a_format_unknown_fields_are_ignored_and_missing_ones_default() {
    let (header, _) = handover();
    let mut text = serde_json::to_string(&header).unwrap();
    text.push('\n');
    text.push_str(
        r#"{"started_at": 5, "from_the_future": [1, 2], "services": [{"name": "sealer", "life": {"state": {"state": "running", "pid": 12}, "new_field": true}}]}"#,
    );
    let s = decode(text.as_bytes()).unwrap().state.unwrap();
    assert_eq!(s.started_at, 5);
    assert_eq!(s.services[0].life.state, StateRecord::Running { pid: 12 });
    assert_eq!(s.services[0].life.restarts, 0);
    // An older image's record has no fatal lines: the count starts over.
    assert_eq!(s.services[0].life.fatal, FatalSeen::default());
    assert!(s.timers.is_empty());
}

#[test]
fn a_newer_format_is_refused_with_who_wrote_it_but_its_descriptors_are_kept() {
    let (mut header, state) = handover();
    header.format = FORMAT + 1;
    header.writer = "9.9.9".into();
    let d = decode(&encode(&header, &state).unwrap()).unwrap();
    assert_eq!(
        d.state.unwrap_err(),
        format!(
            "the handover is format {} (written by venussup 9.9.9), and this venussup {} reads formats 1 to {FORMAT}",
            FORMAT + 1,
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(d.header.fds.control, Some(HandedFd { fd: 4, ino: 12 }));
}

#[test]
fn what_is_not_a_handover_says_so() {
    assert!(decode(b"garbage\n{}")
        .unwrap_err()
        .contains("not a venussup header"));
    let (mut header, state) = handover();
    header.magic = "something-else".into();
    assert!(decode(&encode(&header, &state).unwrap())
        .unwrap_err()
        .contains("not `venussup-handover`"));
    let (header, _) = handover();
    let mut cut = serde_json::to_vec(&header).unwrap();
    cut.extend_from_slice(b"\n{\"services\": [");
    let e = decode(&cut).unwrap().state.unwrap_err();
    assert!(
        e.starts_with("the handover's state (format 1, from venussup"),
        "{e}"
    );
}

#[test]
fn a_candidate_must_read_the_format_this_binary_writes() {
    assert_eq!(
        candidate(&format!("venussup {VERSION}\n")).unwrap(),
        (env!("CARGO_PKG_VERSION").to_string(), FORMAT)
    );
    assert_eq!(
        candidate("venussup 7.0.0 (handover format 9)").unwrap(),
        ("7.0.0".to_string(), 9)
    );
    let old = candidate("venussup 0.0.9").unwrap_err();
    assert!(
        old.starts_with("it is venussup 0.0.9, which reads no handover"),
        "{old}"
    );
    let fmt0 = candidate("venussup 0.0.9 (handover format 0)").unwrap_err();
    assert!(
        fmt0.contains(&format!(
            "reads handover formats up to 0, and this venussup {} writes format {FORMAT}",
            env!("CARGO_PKG_VERSION")
        )),
        "{fmt0}"
    );
    assert!(
        VERSION.ends_with(&format!("(handover format {FORMAT})")),
        "VERSION names FORMAT"
    );
}

#[test]
fn a_second_panic_within_a_minute_gives_up() {
    let minute = 60_000_000_000;
    let t = Mono(10 * minute);
    assert!(!gives_up(None, t));
    assert!(gives_up(Some(Mono(t.0 - 1)), t));
    assert!(gives_up(Some(Mono(t.0 - minute + 1)), t));
    assert!(!gives_up(Some(Mono(t.0 - minute)), t));
}

#[test]
fn a_process_lost_in_the_handover_starts_again_or_completes_its_stop() {
    let t0 = Instant::now();
    let running = Lifecycle {
        state: ServiceState::Running {
            pid: Pid::from_raw(5),
        },
        ready: true,
        restarts: 2,
        ..Lifecycle::default()
    };
    let l = lost_process(running, false, t0);
    assert_eq!(l.state, ServiceState::Backoff { until: t0 });
    assert_eq!((l.restarts, l.ready), (3, false));
    assert!(l.reason.unwrap().contains("process 5 was gone"));
    let stopping = Lifecycle {
        state: ServiceState::Stopping {
            pid: Pid::from_raw(5),
            kill_at: None,
        },
        ..Lifecycle::default()
    };
    assert_eq!(
        lost_process(stopping.clone(), false, t0).state,
        ServiceState::Stopped
    );
    assert_eq!(
        lost_process(stopping, true, t0).state,
        ServiceState::Waiting
    );
    let waiting = lost_process(Lifecycle::default(), false, t0);
    assert_eq!(waiting.state, ServiceState::Waiting);
}
