#!/bin/bash
# Instructions venussup executes per restart, counted by callgrind: a
# measure that, unlike the bench's latencies, does not move with the load
# of a shared VM (BENCHMARKS.md, "The static release build").
#
#     sudo integration/bench/restart-profile.sh BINARY [ROUNDS]   # ROUNDS: 50
#
# BINARY runs `venussup run` on 10 services of the bench's stamp program
# (cpus = "all", confine = "both", as in the bench) under
# `valgrind --tool=callgrind`, instrumented only while ROUNDS services are
# killed (SIGKILL) and restarted, one at a time. It prints, per restart:
#   all      everything the daemon ran (the death, the restart, the state
#            and status files it rewrites after);
#   death    `reap` and what it calls: from the child's exit to the new
#            clone, plus the few post-clone steps of the start (its log
#            line, the pid's start time, the log watch).
# The profile stays in the temporary folder's callgrind.out.* until the end
# (KEEP=1 keeps the folder; read it with callgrind_annotate).
# Needs root (cgroups), valgrind and cc (build-essential).
set -euo pipefail

bin=$(realpath "${1:?usage: restart-profile.sh BINARY [ROUNDS]}")
rounds=${2:-50}
for tool in valgrind callgrind_control callgrind_annotate cc; do
  command -v "$tool" >/dev/null || {
    echo "restart-profile.sh needs $tool: apt-get install -y valgrind build-essential" >&2
    exit 1
  }
done

work=$(mktemp -d /dev/shm/venussup-profile.XXXXXX)
daemon=
cleanup() {
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"
    wait "$daemon" || true
  fi
  [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

cc -O2 -static -nostdlib -o "$work/stamp" "$(dirname "$0")/stamp.c"
: >"$work/stamps"
{
  printf '[host]\nstate_dir = "%s/state"\nlog_dir = "%s/logs"\ncgroup_parent = "venussup-profile-%s"\n' "$work" "$work" $$
  for i in $(seq 0 9); do
    mkdir -p "$work/svc/s$i"
    ln -s "$work/stamps" "$work/svc/s$i/stamps"
    printf '\n[[service]]\nname = "s%s"\ncommand = ["%s/stamp"]\nworkdir = "%s/svc/s%s"\nstable_after = "500ms"\ncpus = "all"\nconfine = "both"\n' \
      "$i" "$work" "$work" "$i"
  done
} >"$work/venussup.toml"

# The pid of the last stamp of service $1 (the stamp program appends
# "name pid ns").
pid_of() { awk -v s="$1" '$1 == s { p = $2 } END { print p }' "$work/stamps"; }
# Waits (at most $2 tenths of a second) until $1 is true.
until_true() {
  local n=0
  until eval "$1"; do
    n=$((n + 1))
    [ "$n" -le "$2" ] || { echo "timed out waiting for: $1" >&2; exit 1; }
    sleep 0.1
  done
}

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out.%p" \
  "$bin" run --config "$work/venussup.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
until_true '[ "$(wc -l <"$work/stamps")" -ge 10 ]' 600
# Every service has run for over stable_after, so each death restarts at once.
sleep 1
callgrind_control -i on "$daemon" >/dev/null 2>&1
for r in $(seq 0 $((rounds - 1))); do
  s=s$((r % 10))
  old=$(pid_of "$s")
  kill -KILL "$old"
  until_true '[ "$(pid_of "$s")" != "$old" ]' 600
  # Let the daemon finish this restart's work before the next death.
  sleep 0.05
done
callgrind_control -d "$daemon" >/dev/null 2>&1
callgrind_control -i off "$daemon" >/dev/null 2>&1

profile=$(ls "$work"/callgrind.out.*.1)
# (awk reads to the end: an early exit would end callgrind_annotate with
# SIGPIPE, which pipefail makes this script's failure.)
inclusive() {
  callgrind_annotate --inclusive=yes "$profile" 2>/dev/null |
    awk -v f="$1" 'index($0, f) && !done { gsub(",", "", $1); print $1; done = 1 }'
}
all=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
death=$(inclusive 'Supervisor>::reap [')
echo "$(basename "$bin"): $rounds restarts; instructions per restart: all $((all / rounds)), death $((death / rounds))"
