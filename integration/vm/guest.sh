#!/bin/sh
# The VM test's checks (issue 16), run inside the guest by vmcheck.service
# at every boot from the 9p share (integration/vm.rs lays the share out).
#
# Boot 1 installs venussup as the README says (the share's install.sh, run
# in a checkout-like folder), runs every check, then reboots; boot 2 checks
# that venussup came back by itself, then powers off. Each check appends one
# line to results.txt, `PASS name detail` or `FAIL name detail`; what it saw
# goes to raw/<name>.txt. The phase is kept on the share, which a reboot
# does not touch.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8

S=/mnt/share
RESULTS=$S/results.txt
RAW=$S/raw
CONFIG=/etc/venussup/venussup.toml
# The config's daemons (integration/vm/venussup.toml).
DAEMONS="sealer worker01 worker02 lat-both lat-affinity"
# The restart-latency pair writes its reports here (see the config).
LAT=/var/lib/venussup-vm
# Kills of each of the latency pair.
LAT_ROUNDS=30
# The same without CLONE_INTO_CGROUP (reported, not judged).
JOIN_ROUNDS=15
CG=/sys/fs/cgroup

say() { echo "vm: $*"; }
pass() { n=$1; shift; echo "PASS $n $*" >>"$RESULTS"; say "PASS $n $*"; }
fail() { n=$1; shift; echo "FAIL $n $*" >>"$RESULTS"; say "FAIL $n $*"; }
# verdict NAME OK DETAIL...: PASS when OK is 0.
verdict() { n=$1 ok=$2; shift 2; if [ "$ok" = 0 ]; then pass "$n" "$@"; else fail "$n" "$@"; fi; }
# raw NAME: stdin appended to raw/NAME.txt.
raw() { cat >>"$RAW/$1.txt"; }
now_ns() { date +%s%N; }
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }
timing() { echo "$1 $2 ms" | raw timings; }

# A kernel CPU list (`0-3,8`) as every CPU, comma-separated (`0,1,2,3,8`).
expand() {
  echo "$1" | tr ',' '\n' | awk -F- 'NF { a = $1; b = (NF > 1 ? $2 : $1)
    for (i = a; i <= b; i++) printf "%s%d", (n++ ? "," : ""), i } END { print "" }'
}
# The CPUs of list $1 that are not in list $2.
minus() { echo "$1" | tr ',' '\n' | grep -vxF "$(echo "$2" | tr ',' '\n')" | paste -sd,; }
online() { expand "$(cat /sys/devices/system/cpu/online)"; }
allowed() { expand "$(awk '/^Cpus_allowed_list/ { print $2 }' "/proc/$1/status" 2>/dev/null)"; }
# The cgroup v2 path of process $1 (`/system.slice/...`).
cgroup_of() { sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null; }

status_json() { timeout 30 venussup status --json --config "$CONFIG" 2>/dev/null; }
# The pid venussup's status gives for service $1.
svc_pid() {
  status_json | jq -r --arg n "$1" '.services[] | select(.name == $n) | .pid // empty'
}
# Processes that are a stand-in named $1 (whoever started them): every
# service of the config is one.
procs() { pgrep -f -- "standin --name $1( |\$)" | paste -sd' '; }
# Every stand-in.
all_procs() { pgrep -f -- 'standin --name ' | paste -sd' '; }
count() { echo $#; }
# Every daemon of the config is running, each with a pid.
settled() {
  status_json | jq -e --argjson n "$(count $DAEMONS)" \
    '[.services[] | select(.kind == "daemon" and .state == "running" and .pid != null)] | length == $n' \
    >/dev/null 2>&1
}
main_pid() { systemctl show -p MainPID --value venussup; }
# wait_until SECONDS COMMAND...: 0 once COMMAND succeeds, 1 after SECONDS.
wait_until() {
  limit=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$limit" ] || return 1
    sleep 0.2
  done
}
snapshot() { # NAME: what the guest looks like now, into raw/NAME.txt
  {
    echo "== $(date +%T.%N) online $(cat /sys/devices/system/cpu/online)"
    systemctl show -p ActiveState -p SubState -p MainPID -p NRestarts -p TasksCurrent -p DelegateControllers venussup
    ps -eo pid,ppid,stat,cgroup:70,args --sort=pid | grep -v -e '\[.*\]$'
    echo "-- cgroups with venussup or a service in their path"
    find $CG -type d | grep -E "venussup|$(echo $DAEMONS | tr ' ' '|')" | grep -v vmcheck
  } | raw "$1"
}

mkdir -p "$RAW"
phase=$(cat "$S/phase" 2>/dev/null || echo 1)
say "phase $phase"

if [ "$phase" = 1 ]; then
  # ------------------------------------------------------ the guest itself
  {
    echo "kernel: $(uname -r)"
    echo "systemd: $(systemctl --version | head -n 1)"
    echo "cmdline: $(cat /proc/cmdline)"
    echo "/sys/fs/cgroup: $(stat -fc %T $CG)"
    echo "cgroup mounts: $(grep -E ' cgroup2? ' /proc/mounts | tr '\n' ';')"
    echo "root cgroup.controllers: $(cat $CG/cgroup.controllers)"
    echo "root cgroup.subtree_control (boot): $(cat $CG/cgroup.subtree_control)"
    echo "system.slice cgroup.subtree_control (boot): $(cat $CG/system.slice/cgroup.subtree_control)"
    echo "/sys/kernel/cgroup/features: $(cat /sys/kernel/cgroup/features | tr '\n' ' ')"
    echo "/sys/kernel/cgroup/delegate: $(cat /sys/kernel/cgroup/delegate | tr '\n' ' ')"
    echo "clone3 syscall: $(grep -cw __x64_sys_clone3 /proc/kallsyms) symbol(s) (CLONE_INTO_CGROUP since 5.7)"
    echo "cpus online: $(cat /sys/devices/system/cpu/online)"
    echo "smt control: $(cat /sys/devices/system/cpu/smt/control 2>/dev/null)"
    for c in /sys/devices/system/cpu/cpu[0-9]*; do
      echo "${c##*/}: siblings $(cat "$c/topology/thread_siblings_list") package $(cat "$c/topology/physical_package_id") core $(cat "$c/topology/core_id")"
    done
    for n in /sys/devices/system/node/node[0-9]*; do echo "${n##*/}: cpus $(cat "$n/cpulist")"; done
  } | raw guest
  # A diagnostic (VENUSSUP_VM_FAVORDYNMODS=1 on the host): cgroup2 with
  # favordynmods, where a migration waits for no RCU grace period.
  if [ -e "$S/favordynmods" ]; then
    mount -o remount,favordynmods $CG
    echo "remounted for the diagnostic: $(grep ' cgroup2 ' /proc/mounts)" | raw guest
  fi
  ALL=$(online)
  # After `smt off`: the first thread of every core.
  SMT_OFF=$(for c in /sys/devices/system/cpu/cpu[0-9]*; do
      expand "$(cat "$c/topology/thread_siblings_list")" | cut -d, -f1
    done | sort -nu | paste -sd,)
  SIBLINGS=$(minus "$ALL" "$SMT_OFF")
  printf 'ALL=%s\nSMT_OFF=%s\nSIBLINGS=%s\n' "$ALL" "$SMT_OFF" "$SIBLINGS" >"$S/topology.env"
  nodes=$(ls -d /sys/devices/system/node/node[0-9]* | wc -l)
  [ "$(stat -fc %T $CG)" = cgroup2fs ] && ! grep -q ' cgroup ' /proc/mounts \
    && [ "$(readlink /proc/1/exe)" = /usr/lib/systemd/systemd ] \
    && [ "$(count $(echo "$ALL" | tr ',' ' '))" = 8 ] && [ "$nodes" = 2 ] && [ -n "$SIBLINGS" ]
  verdict guest $? "kernel $(uname -r), $(systemctl --version | head -n 1 | cut -d' ' -f1-2)," \
    "pure cgroup v2, PID 1 $(readlink /proc/1/exe), CPUs $ALL, $nodes NUMA nodes, siblings $SIBLINGS"

  # -------------------------------------------- install as the README says
  mkdir -p "$LAT"
  t0=$(now_ns)
  (cd "$S/src" && timeout 300 sh -ex "$S/install.sh") >"$RAW/install.txt" 2>&1
  rc=$?
  timing install "$(ms_since "$t0")"
  wait_until 120 settled
  settled_rc=$?
  timing install-until-settled "$(ms_since "$t0")"
  snapshot install
  verdict install $(( rc + settled_rc )) "README steps exit $rc, unit $(systemctl is-active venussup)," \
    "services $( [ $settled_rc = 0 ] && echo running || echo 'not all running')," \
    "StatusText: $(systemctl show -p StatusText --value venussup)"
  if [ $(( rc + settled_rc )) != 0 ]; then
    # Nothing else can be checked; the test names every check missing.
    journalctl --no-pager -o short-monotonic -u venussup | raw journal-boot1
    echo done >"$S/phase"
    sync
    systemctl poweroff
    exit 0
  fi

  # ------------------------------------------ b. the split held by cpusets
  plan=$(timeout 60 venussup check --json --config "$CONFIG" 2>/dev/null)
  echo "$plan" | raw plan
  for svc in $DAEMONS; do
    planned=$(echo "$plan" | jq -r --arg n "$svc" \
      '.plan.services[] | select(.name == $n) | .cpus.cpus // [] | map(tostring) | join(",")')
    confine=$(echo "$plan" | jq -r --arg n "$svc" '.plan.services[] | select(.name == $n) | .cpus.confine')
    pid=$(svc_pid "$svc")
    cg=$(cgroup_of "${pid:-0}")
    eff=$(expand "$(cat "$CG$cg/cpuset.cpus.effective" 2>/dev/null)")
    before=$(allowed "${pid:-0}")
    taskset -p -c "$ALL" "${pid:-0}" 2>&1 | raw cpusets
    after=$(allowed "${pid:-0}")
    echo "$svc pid $pid confine $confine planned $planned cgroup $cg effective $eff allowed $before after-taskset $after" | raw cpusets
    detail="confine $confine, planned $planned, cgroup ${cg:-?} cpuset.cpus.effective ${eff:-none}, Cpus_allowed_list $before, after taskset -c $ALL: $after"
    ok=1
    if [ -n "$pid" ] && [ -n "$planned" ] && [ "$before" = "$planned" ]; then
      case $confine in
        both|cgroup) [ "$eff" = "$planned" ] && [ "$after" = "$planned" ] && ok=0 ;;
        # The mask alone does not hold: taskset may widen it.
        *) ok=0 ;;
      esac
    fi
    verdict "cpusets.$svc" $ok "$detail"
  done

  # ---------------------------------------------------- a. real SMT hotplug
  at_start=$(online)
  t0=$(now_ns)
  timeout 60 venussup smt on --config "$CONFIG" 2>&1 | raw smt
  after_on=$(online)
  timeout 60 venussup smt off --config "$CONFIG" 2>&1 | raw smt
  after_off=$(online)
  timing smt-on-off "$(ms_since "$t0")"
  dmesg | grep -E 'smpboot|CPU[0-9]* is (now )?(up|offline)|Booting Node' | tail -n 40 | raw smt
  [ "$at_start" = "$SMT_OFF" ] && [ "$after_on" = "$ALL" ] && [ "$after_off" = "$SMT_OFF" ]
  verdict smt-hotplug $? "online after venussup's start $at_start (want $SMT_OFF)," \
    "after smt on $after_on (want $ALL), after smt off $after_off"

  # --------------------------------------- c. every service inside the unit
  main=$(main_pid)
  outside="" threads=$(ls "/proc/$main/task" | wc -l) where="venussup $(cgroup_of "$main")"
  for svc in $DAEMONS; do
    pid=$(svc_pid "$svc")
    cg=$(cgroup_of "${pid:-0}")
    cat "/proc/${pid:-0}/cgroup" 2>/dev/null | sed "s/^/$svc $pid: /" | raw proc-cgroup
    where="$where; $svc $cg"
    case $cg in
      /system.slice/venussup.service/*) ;;
      *) outside="$outside $svc" ;;
    esac
    threads=$(( threads + $(ls "/proc/${pid:-0}/task" 2>/dev/null | wc -l) ))
  done
  cat "/proc/$main/cgroup" | sed "s/^/venussup $main: /" | raw proc-cgroup
  verdict services-in-unit "$([ -z "$outside" ]; echo $?)" \
    "${outside:+outside the unit:$outside; }/proc/PID/cgroup: $where"
  tasks=$(systemctl show -p TasksCurrent --value venussup)
  timeout 30 systemctl status --no-pager --lines=0 venussup 2>&1 | raw systemctl-status
  {
    echo "-- cgroup.procs and cgroup.subtree_control under the unit"
    for d in $(find $CG/system.slice/venussup.service -type d 2>/dev/null); do
      echo "$d: procs [$(cat "$d/cgroup.procs" | paste -sd' ')] subtree_control [$(cat "$d/cgroup.subtree_control")]"
    done
    echo "root cgroup.subtree_control: $(cat $CG/cgroup.subtree_control)"
  } | raw systemctl-status
  [ "$tasks" -ge "$threads" ] 2>/dev/null
  verdict tasks-counted $? "TasksCurrent=$tasks; venussup and its services have $threads tasks" \
    "(venussup alone $(ls "/proc/$main/task" | wc -l))"

  # ---------- i. venussup upgrade (issue 17): the README's two steps keep
  # MainPID, every service's pid and the unit active, restarting nothing.
  pids_now() { for svc in $DAEMONS; do printf '%s:%s ' "$svc" "$(svc_pid "$svc")"; done; }
  main_before=$(main_pid) nr_before=$(systemctl show -p NRestarts --value venussup)
  pids_before=$(pids_now)
  t0=$(now_ns)
  out=$(cd "$S/src" && install -m 0755 target/release/venussup /usr/local/bin/venussup &&
    timeout 120 venussup upgrade --config "$CONFIG" 2>&1)
  rc=$?
  timing upgrade "$(ms_since "$t0")"
  echo "$out" | raw upgrade
  main_after=$(main_pid) nr_after=$(systemctl show -p NRestarts --value venussup)
  pids_after=$(pids_now) active=$(systemctl is-active venussup)
  [ $rc = 0 ] && [ "$main_after" = "$main_before" ] && [ "$nr_after" = "$nr_before" ] &&
    [ "$pids_after" = "$pids_before" ] && [ "$active" = active ]
  verdict upgrade $? "exit $rc, MainPID $main_before -> $main_after, NRestarts $nr_before -> $nr_after," \
    "unit $active, services $pids_before-> $pids_after; said: $(echo "$out" | tail -n 1)"

  # ---------------------- h. confined vs affinity-only restart, same run
  # From just before the kill -9 to the new process running: the pair's
  # pid file is rewritten by the new process's first command (see the
  # config), so its mtime is when it ran. The services take turns.
  lat_once() { # SERVICE: one kill -9 of it; the restart's latency in µs
    local stamp old pid killed limit new waiter
    stamp=$LAT/$1.pid
    old=$(stat -c %.9Y "$stamp" 2>/dev/null)
    pid=$(cat "$stamp" 2>/dev/null)
    # The restart is over long before the sleep ends; nothing of this
    # script runs meanwhile (the sleep is forked before the kill), so the
    # restart has the emulated CPUs to itself. How late the poll below
    # sees the new stamp is no part of the latency.
    sleep 0.8 &
    waiter=$!
    killed=$(now_ns)
    kill -9 "$pid" || { wait $waiter; return 1; }
    wait $waiter
    limit=$(( $(date +%s) + 10 ))
    while [ "$(stat -c %.9Y "$stamp" 2>/dev/null)" = "$old" ] && [ "$(date +%s)" -lt $limit ]; do
      sleep 0.1
    done
    new=$(stat -c %.9Y "$stamp" 2>/dev/null)
    [ "$new" != "$old" ] && echo $(( ($(echo "$new" | tr -d .) - killed) / 1000 ))
  }
  # venussup's own account, from its log: ms from "restarting" to
  # "started" (the spawn, a cgroup join included), per restart of $1.
  spawn_times() {
    journalctl --no-pager -o cat -u venussup --since "@$1" | awk -v s="service=$2" '
      index($0, s) { split($1, t, "T"); split(t[2], h, ":"); sec = h[1] * 3600 + h[2] * 60 + h[3]
        if ($0 ~ /restarting/) r = sec
        else if ($0 ~ /started service=/ && r) { printf "%d\n", (sec - r) * 1000000; r = 0 } }'
  }
  median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
  us_as_ms() { echo "$(( ${1:-0} / 1000 )).$(( ${1:-0} % 1000 / 100 ))"; }
  # measure_pair ROUNDS TAG: ROUNDS kills of each of the pair, in turns
  # (ABBA, so that a drift of the emulation's speed weighs on both alike),
  # into raw/latency-{both,affinity}TAG.txt; sets both, aff (medians, µs),
  # nb, na (restarts seen) and since (when it began).
  measure_pair() {
    : >"$RAW/latency-both$2.txt"; : >"$RAW/latency-affinity$2.txt"
    wait_until 30 test -s "$LAT/lat-both.pid" -a -s "$LAT/lat-affinity.pid"
    sleep 1
    since=$(date +%s)
    t0=$(now_ns)
    r=0 missed=0
    while [ $r -lt "$1" ] && [ $missed -lt 3 ]; do
      r=$(( r + 1 ))
      [ $(( r % 2 )) = 1 ] && order="both affinity" || order="affinity both"
      for kind in $order; do
        lat_once "lat-$kind" >>"$RAW/latency-$kind$2.txt" || missed=$(( missed + 1 ))
      done
    done
    timing "restart-latency$2" "$(ms_since "$t0")"
    both=$(median <"$RAW/latency-both$2.txt") aff=$(median <"$RAW/latency-affinity$2.txt")
    nb=$(wc -l <"$RAW/latency-both$2.txt") na=$(wc -l <"$RAW/latency-affinity$2.txt")
  }
  measure_pair $LAT_ROUNDS ""
  {
    echo "lat-both /proc/PID/cgroup: $(cgroup_of "$(procs lat-both)")"
    echo "lat-affinity /proc/PID/cgroup: $(cgroup_of "$(procs lat-affinity)")"
    echo "confined (µs): $(paste -sd' ' "$RAW/latency-both.txt")"
    echo "affinity-only (µs): $(paste -sd' ' "$RAW/latency-affinity.txt")"
    echo "venussup's log, restarting -> started, confined (µs): $(spawn_times "$since" lat-both | paste -sd' ')"
    echo "venussup's log, restarting -> started, affinity-only (µs): $(spawn_times "$since" lat-affinity | paste -sd' ')"
  } | raw latency
  journalctl --no-pager -o cat -u venussup --since "@$since" | grep -e 'service=lat-both' | head -40 | raw latency-log
  spawn_both=$(spawn_times "$since" lat-both | median) spawn_aff=$(spawn_times "$since" lat-affinity | median)
  # judge_pair: ratio and ok (0 when every restart was seen and the
  # confined median is within 1.3x of the affinity-only one).
  judge_pair() {
    if [ -n "$both" ] && [ -n "$aff" ] && [ "$nb" = $LAT_ROUNDS ] && [ "$na" = $LAT_ROUNDS ]; then
      ratio=$(awk -v b="$both" -v a="$aff" 'BEGIN { printf "%.2f", b / a }')
      ok=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.3 ? 0 : 1) }')
    else
      ratio=? ok=1
    fi
  }
  judge_pair
  # Emulated CPUs on a host that may be busy: one more run before a verdict
  # of "too slow" (both runs are reported).
  first=""
  if [ "$ok" != 0 ] && [ "$ratio" != "?" ]; then
    first="first run: $(us_as_ms "$both") vs $(us_as_ms "$aff") ms, ratio $ratio; again: "
    measure_pair $LAT_ROUNDS -again
    judge_pair
  fi
  verdict restart-latency "$ok" "${first}confined median $(us_as_ms "$both") ms," \
    "affinity-only median $(us_as_ms "$aff") ms, ratio $ratio (want <= 1.3)," \
    "$nb + $na of $LAT_ROUNDS + $LAT_ROUNDS restarts seen;" \
    "venussup's log: spawn median $(us_as_ms "$spawn_both") vs $(us_as_ms "$spawn_aff") ms"

  # The same without CLONE_INTO_CGROUP (children join through cgroup.procs,
  # as on a kernel before 5.7), for BENCHMARKS.md: passes when every
  # restart was seen; the ratio is reported, not judged.
  dropin=/run/systemd/system/venussup.service.d
  mkdir -p "$dropin"
  printf '[Service]\nEnvironment=VENUSSUP_NO_CLONE_INTO_CGROUP=1\n' >"$dropin/bench.conf"
  systemctl daemon-reload
  timeout 120 systemctl restart venussup
  wait_until 120 settled
  measure_pair $JOIN_ROUNDS -join
  rm -f "$dropin/bench.conf"
  systemctl daemon-reload
  [ "$nb" = $JOIN_ROUNDS ] && [ "$na" = $JOIN_ROUNDS ]
  verdict restart-latency-join $? "without CLONE_INTO_CGROUP: confined median $(us_as_ms "$both") ms," \
    "affinity-only median $(us_as_ms "$aff") ms," \
    "ratio $(awk -v b="${both:-0}" -v a="${aff:-1}" 'BEGIN { printf "%.2f", b / a }')," \
    "$nb + $na of $JOIN_ROUNDS + $JOIN_ROUNDS restarts seen"

  # ------------------------- g. status after a restart of venussup: SMT
  t0=$(now_ns)
  timeout 120 systemctl restart venussup
  wait_until 120 settled
  timing restart-until-settled "$(ms_since "$t0")"
  smt=$(status_json | jq -c .smt)
  line=$(timeout 30 venussup status --config "$CONFIG" 2>&1 | grep -m 1 -i smt)
  { echo "online: $(online)"; echo "status --json .smt: $smt"; echo "status: $line"; } | raw status-smt
  # Some list in the snapshot's SMT record names exactly the offline siblings.
  echo "$smt" | jq -e --arg want "$SIBLINGS" \
    '[.. | arrays | select(all(type == "number")) | select(sort | map(tostring) | join(",") == $want)] | length > 0' >/dev/null 2>&1
  verdict status-smt-after-restart $? "offline now $(minus "$ALL" "$(online)") (want $SIBLINGS reported);" \
    "status --json .smt = $smt; status says \"$line\""

  # -------- h. nothing escapes (issue 18): a second venussup in a unit of
  # its own (KillMode=process, so systemd kills nothing for it) runs a
  # service whose child calls setsid; that child must be gone after the
  # service's restart, after its stop and after venussup's exit. Its drain
  # command (run at each planned stop, in the service's cgroup) and a
  # timer's gate command (every second, in the timer's) leave setsid
  # children too: they must not pile up, and none outlives venussup.
  esc=/run/venussup-escape
  mkdir -p "$esc"
  printf '%s\n' '[host]' "state_dir = \"$esc/state\"" "log_dir = \"$esc/logs\"" \
    'cgroup_parent = "escape"' '' '[[service]]' 'name = "esc"' \
    'command = ["/bin/sh", "-c", "setsid sleep 100001 & exec sleep 100002"]' 'cpus = "all"' \
    'drain = { command = ["/bin/sh", "-c", "setsid sleep 100003 & echo drained"], timeout = "10s" }' \
    '' '[[timer]]' 'name = "gated"' 'every = "1s"' 'command = ["/bin/true"]' \
    'gate = { command = ["/bin/sh", "-c", "setsid sleep 100004 & echo 0"], target = 1 }' >"$esc.toml"
  esc_child() { pgrep -f '^sleep 100001$' | paste -sd' '; }
  helpers_left() { pgrep -fc '^sleep 10000[34]$'; }
  esc_gone() { ! kill -0 "$1" 2>/dev/null; }
  esc_new() { c=$(esc_child); [ -n "$c" ] && [ "$(count $c)" = 1 ] && [ "$c" != "$1" ]; }
  systemd-run --quiet --unit=venussup-escape -p Delegate=yes -p KillMode=process \
    /usr/local/bin/venussup run --config "$esc.toml"
  c1="" c2="" c3=""
  wait_until 60 esc_new none && c1=$(esc_child)
  seen="first child ${c1:-none} in $(cgroup_of "${c1:-0}")"
  timeout 30 venussup restart esc --config "$esc.toml" >/dev/null 2>&1
  wait_until 30 esc_new "${c1:-0}" && c2=$(esc_child)
  restart_ok=1; esc_gone "${c1:-0}" && [ -n "$c2" ] && restart_ok=0
  # The drain ran before that restart; its child went with the old run.
  drained=$(pgrep -fc '^sleep 100003$')
  [ "$drained" = 0 ] || restart_ok=1
  seen="$seen; after restart ${c2:-none} in $(cgroup_of "${c2:-0}"), old one $(esc_gone "${c1:-0}" && echo gone || echo ALIVE), drain children left $drained"
  timeout 30 venussup stop esc --config "$esc.toml" >/dev/null 2>&1
  wait_until 10 esc_gone "${c2:-0}"
  stop_ok=$?
  seen="$seen; after stop $(esc_gone "${c2:-0}" && echo gone || echo ALIVE)"
  timeout 30 venussup start esc --config "$esc.toml" >/dev/null 2>&1
  wait_until 30 esc_new "${c2:-0}" && c3=$(esc_child)
  # Several gates have run by now (one a second): at most the latest's
  # child may still be alive, for the moment its cgroup is being emptied.
  gated=$(helpers_left)
  ticks=$(timeout 30 venussup status --json --config "$esc.toml" 2>/dev/null | jq '.timers[0].runs.success // 0')
  gate_ok=1; [ "${gated:-9}" -le 1 ] && [ "${ticks:-0}" -ge 2 ] && gate_ok=0
  seen="$seen; $ticks gated runs, gate and drain children alive before exit $gated"
  emain=$(systemctl show -p MainPID --value venussup-escape)
  kill -TERM "${emain:-0}"
  wait_until 30 esc_gone "${emain:-0}"
  wait_until 10 esc_gone "${c3:-0}"
  exit_ok=$?
  [ -n "$c3" ] || exit_ok=1
  [ "$(helpers_left)" = 0 ] || exit_ok=1
  seen="$seen; started again ${c3:-none}, after venussup's exit $(esc_gone "${c3:-0}" && echo gone || echo ALIVE), helpers' children left $(helpers_left)"
  { echo "$seen"; journalctl --no-pager -o short-monotonic -u venussup-escape; } | raw escape
  systemctl stop venussup-escape 2>/dev/null
  systemctl reset-failed venussup-escape 2>/dev/null
  for p in $(pgrep -f '^sleep 10000[1-4]$'); do kill -9 "$p"; done
  verdict escape-setsid-child $(( restart_ok + stop_ok + exit_ok + gate_ok )) "$seen"

  # ---------------- d. kill -9 of venussup: systemd restarts it, one copy
  snapshot kill9
  main=$(main_pid)
  restarts=$(systemctl show -p NRestarts --value venussup)
  old=""
  for svc in $DAEMONS; do old="$old $(procs "$svc")"; done
  t0=$(now_ns)
  kill -9 "$main"
  # How long the old services outlive their supervisor (zombies count:
  # nobody has reaped them yet).
  i=0 gone=""
  while [ $i -lt 1200 ]; do
    alive=""
    for p in $old; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    if [ -z "$alive" ]; then gone=$(ms_since "$t0"); break; fi
    i=$(( i + 1 )); sleep 0.05
  done
  wait_until 120 sh -c "[ \"\$(systemctl show -p MainPID --value venussup)\" != $main ] && [ \"\$(systemctl is-active venussup)\" = active ]"
  wait_until 120 settled
  back=$(ms_since "$t0")
  timing kill9-until-settled "$back"
  snapshot kill9
  copies="" ok=0
  for svc in $DAEMONS; do
    now=$(procs "$svc")
    copies="$copies $svc:[$now]"
    [ "$(count $now)" = 1 ] || ok=1
    for p in $now; do case " $old " in *" $p "*) ok=1 ;; esac; done
  done
  nrestarts=$(systemctl show -p NRestarts --value venussup)
  [ "$nrestarts" = $(( restarts + 1 )) ] || ok=1
  verdict kill9-one-copy $ok "NRestarts $restarts -> $nrestarts, all settled after $back ms; now$copies (old:$old)"
  # systemd's kill of the unit's cgroup, not the new venussup 5 s later
  # (RestartSec), is what must end them.
  [ -n "$gone" ] && [ "$gone" -le 3000 ]
  verdict kill9-unsupervised $? "the old services outlived the killed venussup by ${gone:-more than 60000} ms" \
    "(want <= 3000 ms: killed with it by systemd, before RestartSec=5s)"

  # ------ e. kill -9 then systemctl stop: no process and no cgroup left
  main=$(main_pid)
  old=""
  for svc in $DAEMONS; do old="$old $(procs "$svc")"; done
  kill -9 "$main"
  timeout 120 systemctl stop venussup
  stop_rc=$?
  sleep 2
  snapshot kill9-stop
  left=""
  for p in $(echo $old $(all_procs) $(pgrep -x venussup) | tr ' ' '\n' | sort -nu); do
    kill -0 "$p" 2>/dev/null && left="$left $p($(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-40))"
  done
  cgs=$(find $CG -type d | grep -E "venussup|/($(echo $DAEMONS | tr ' ' '|'))(/|\$)" | grep -v vmcheck | paste -sd' ')
  [ $stop_rc = 0 ] && [ -z "$left" ] && [ -z "$cgs" ]
  verdict kill9-stop-clean $? "stop exit $stop_rc, unit $(systemctl is-active venussup);" \
    "processes left: ${left:-none}; cgroups left: ${cgs:-none}"
  journalctl --no-pager -o short-monotonic -u venussup | raw journal-boot1

  echo 2 >"$S/phase"
  sync
  say "rebooting"
  systemctl reboot
  exit 0
fi

if [ "$phase" = 2 ]; then
  # --------------------------- f. after a reboot: up again by itself, SMT off
  . "$S/topology.env"
  t0=$(now_ns)
  wait_until 240 sh -c '[ "$(systemctl is-active venussup)" = active ]'
  wait_until 120 settled
  timing reboot-until-settled "$(ms_since "$t0") (since vmcheck started)"
  snapshot reboot
  running=$(status_json | jq -r '[.services[] | select(.state == "running")] | length')
  now=$(online)
  [ "$(systemctl is-active venussup)" = active ] && settled && [ "$now" = "$SMT_OFF" ]
  verdict reboot $? "unit $(systemctl is-active venussup) (enabled: $(systemctl is-enabled venussup))," \
    "$running of $(count $DAEMONS) services running, online CPUs $now (want $SMT_OFF)," \
    "up $(cut -d' ' -f1 /proc/uptime) s after boot"
  journalctl --no-pager -o short-monotonic -u venussup | raw journal-boot2
  echo done >"$S/phase"
  sync
  say "powering off"
  systemctl poweroff
  exit 0
fi

say "phase $phase: nothing to do; powering off"
systemctl poweroff
