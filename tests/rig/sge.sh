#!/usr/bin/env bash
# ScriptHut test rig: a single-node Son of Grid Engine (sge_qmaster + sge_execd) on this host,
# reached over the Slurm rig's OpenSSH server (127.0.0.1:2222, user `hutuser`).
# No systemd: both daemons are started by hand and stopped by their pid files.
#
#   usage: tests/rig/sge.sh up|down|status|env|stop-qmaster
#
# Debian's gridengine-client conflicts with slurm-wlm-torque (the Slurm rig's Torque-style
# wrappers): before apt replaces them, the wrappers are unpacked under
# /var/lib/scripthut-rig/torque, where tests/rig/slurm.sh looks for them, so both rigs keep
# working. Generated SGE configuration and logs live under /var/lib/scripthut-rig/sge; the
# cell itself is Debian's (/var/lib/gridengine/default, spool /var/spool/gridengine).
# Needs root. Docs: docs/testing.md.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
readonly HERE
readonly RIG_DIR=/var/lib/scripthut-rig
readonly SGE_DIR=$RIG_DIR/sge
readonly LOG_DIR=$RIG_DIR/log/sge
readonly TORQUE_DIR=$RIG_DIR/torque
readonly SSH_DIR=$RIG_DIR/ssh
readonly SSH_HOST=127.0.0.1
readonly SSH_PORT=2222
readonly SSH_USER=hutuser
readonly SSH_KEY=$SSH_DIR/hutuser_ed25519
readonly KNOWN_HOSTS=$SSH_DIR/known_hosts
readonly SGE_ROOT=/var/lib/gridengine
readonly SGE_CELL=default
readonly SPOOL=/var/spool/gridengine
readonly QMASTER_PID=$SPOOL/qmaster/qmaster.pid
readonly QUEUE=all.q
readonly PE=smp
readonly SLOTS=${SCRIPTHUT_RIG_SGE_SLOTS:-8}   # advertised slots, > real cores
readonly CONFIG_VERSION=2                     # bump when configure_cluster changes
readonly PKGS=(gridengine-master gridengine-exec gridengine-client)
export SGE_ROOT SGE_CELL

SSH_OPTS=(-F /dev/null -p "$SSH_PORT" -i "$SSH_KEY" -o IdentitiesOnly=yes
          -o UserKnownHostsFile="$KNOWN_HOSTS" -o StrictHostKeyChecking=yes
          -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR)

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs_since() { local d=$(( $(now_ms) - $1 )); printf '%d.%02d' $((d / 1000)) $((d % 1000 / 10)); }
say() { printf '[sge-rig] %s\n' "$*"; }
die() { printf '[sge-rig] ERROR: %s\n' "$*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
host() { hostname; }
# The execd names its spool folder after the name its address resolves to (here `localhost`).
execd_pid_file() {
  local f; for f in "$SPOOL/execd/"*/execd.pid; do live_pid "$f" sge_execd >/dev/null && { echo "$f"; return 0; }; done
  echo "$SPOOL/execd/$(host)/execd.pid"
}

fail_with_log() { # message logfile...
  local msg=$1 f; shift
  for f in "$@"; do
    [ -f "$f" ] && { printf -- '---- last lines of %s ----\n' "$f" >&2; tail -n 25 "$f" >&2; }
  done
  die "$msg"
}

wait_for() { # secs cmd...
  local end=$(( $(date +%s) + $1 )); shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.2
  done
}

# Alive, not a zombie, and the expected command (a stale pid file may name another process).
live_pid() { # pidfile comm
  local pid="" comm="" stat=""
  read -r pid 2>/dev/null < "$1" || [ -n "$pid" ] || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  read -r comm 2>/dev/null < "/proc/$pid/comm" || return 1
  [ "$comm" = "$2" ] || return 1
  read -r stat 2>/dev/null < "/proc/$pid/stat" || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ] || return 1
  echo "$pid"
}

stop_pidfile() { # name pidfile comm
  local pid i; pid=$(live_pid "$2" "$3") || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 300); do live_pid "$2" "$3" >/dev/null || break; sleep 0.1; done
  if live_pid "$2" "$3" >/dev/null; then kill -9 "$pid" 2>/dev/null || true; say "killed $1 ($pid)"
  else say "stopped $1 ($pid)"; fi
}

# ------------------------------------------------------------------------------------- checks
chk_qmaster() { timeout 10 qstat -xml -u '*' >/dev/null 2>&1; }
chk_execd() {
  local o; o=$(timeout 10 qstat -f -q "$QUEUE" 2>/dev/null) || return 1
  # a queue instance in state a/u/d/E (unknown, disabled, error) cannot run jobs
  awk -v q="$QUEUE@" 'index($1, q) == 1 { found = 1; if ($6 ~ /[uadE]/) bad = 1 } END { exit !(found && !bad) }' <<<"$o"
}
chk_ssh() {
  [ -r "$SSH_KEY" ] && [ -r "$KNOWN_HOSTS" ] || return 1
  timeout 15 ssh "${SSH_OPTS[@]}" "$SSH_USER@$SSH_HOST" 'qstat -xml >/dev/null && qhost >/dev/null' >/dev/null 2>&1
}

check_all() { # [quiet]
  local quiet=${1:-} down=() name
  for name in qmaster execd ssh; do
    if "chk_$name"; then [ -n "$quiet" ] || printf '  %-8s up\n' "$name"
    else down+=("$name"); [ -n "$quiet" ] || printf '  %-8s DOWN\n' "$name"; fi
  done
  if [ ${#down[@]} -gt 0 ]; then
    RIG_DOWN="${down[*]}"; [ -n "$quiet" ] || echo "sge rig: DOWN (${down[*]})"; return 1
  fi
  [ -n "$quiet" ] || echo "sge rig: UP"
}

# ------------------------------------------------------------------------------------ install
# slurm-wlm-torque (the Slurm rig's PBS-style wrappers) conflicts with gridengine-client: keep
# a copy of the wrappers where slurm.sh finds them before apt removes the package.
keep_torque_wrappers() {
  pkg_installed slurm-wlm-torque || return 0
  [ -x "$TORQUE_DIR/usr/bin/qsub" ] && return 0
  say "unpacking slurm-wlm-torque into $TORQUE_DIR before gridengine-client replaces it"
  local tmp p; tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download slurm-wlm-torque) >>"$LOG_DIR/apt.log" 2>&1 ||
    fail_with_log "apt-get download slurm-wlm-torque failed" "$LOG_DIR/apt.log"
  rm -rf "$TORQUE_DIR"; dpkg-deb -x "$tmp"/slurm-wlm-torque_*.deb "$TORQUE_DIR"; rm -rf "$tmp"
  for p in sbatch salloc srun squeue scontrol scancel sinfo; do ln -sf "/usr/bin/$p" "$TORQUE_DIR/usr/bin/$p"; done
  apt-mark manual libslurm-perl >/dev/null 2>&1 || true
}

ensure_packages() {
  local missing=() p
  for p in "${PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  keep_torque_wrappers
  local t; t=$(now_ms)
  say "installing ${missing[*]} (log: $LOG_DIR/apt.log)"
  local h; h=$(host)
  debconf-set-selections <<EOF
gridengine-common shared/gridenginemaster string $h
gridengine-common shared/gridenginecell string $SGE_CELL
gridengine-common shared/gridengineconfig boolean true
gridengine-client shared/gridenginemaster string $h
EOF
  export DEBIAN_FRONTEND=noninteractive
  local aptopts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  { apt-get "${aptopts[@]}" update && apt-get "${aptopts[@]}" install -y --no-install-recommends "${missing[@]}"; } \
    >>"$LOG_DIR/apt.log" 2>&1 || fail_with_log "apt-get install ${missing[*]} failed" "$LOG_DIR/apt.log"
  say "installed in $(secs_since "$t") s"
}

# 127.0.0.1's first name in /etc/hosts is `localhost`, not the host name: without aliases
# every client is refused ("client IP resolved to host name localhost").
ensure_host_aliases() {
  local h names f=$SGE_ROOT/$SGE_CELL/common/host_aliases
  h=$(host)
  names=$(awk -v h="$h" '$1 ~ /^127\./ { for (i = 2; i <= NF; i++) if ($i != h) print $i }' /etc/hosts | sort -u | tr '\n' ' ')
  local want="$h ${names% }"
  if [ "$(cat "$f" 2>/dev/null)" != "$want" ]; then
    echo "$want" > "$f"; chown sgeadmin:sgeadmin "$f"; chmod 644 "$f"
    [ "$(cat "$SGE_ROOT/$SGE_CELL/common/act_qmaster" 2>/dev/null)" = "$h" ] ||
      echo "$h" > "$SGE_ROOT/$SGE_CELL/common/act_qmaster"
    RESTART=1
  fi
}

start_qmaster() {
  if live_pid "$QMASTER_PID" sge_qmaster >/dev/null && [ "${RESTART:-0}" = 0 ] && chk_qmaster; then return 0; fi
  stop_pidfile sge_qmaster "$QMASTER_PID" sge_qmaster
  local t; t=$(now_ms)
  /usr/sbin/sge_qmaster </dev/null >>"$LOG_DIR/qmaster.out" 2>&1 9>&- ||
    fail_with_log "sge_qmaster failed to start" "$LOG_DIR/qmaster.out" "$SPOOL/qmaster/messages"
  wait_for 60 chk_qmaster || fail_with_log "sge_qmaster does not answer qstat" "$SPOOL/qmaster/messages"
  say "sge_qmaster ready in $(secs_since "$t") s (pid $(cat "$QMASTER_PID"))"
}

# qconf -A<x> adds, -M<x> modifies: try to modify first, add when the object does not exist.
qconf_put() { # kind file   (kind: q hgrp p)
  qconf "-M$1" "$2" >/dev/null 2>&1 || qconf "-A$1" "$2" >/dev/null 2>&1 ||
    die "qconf could not load $2: $(qconf "-A$1" "$2" 2>&1 | tail -n1)"
}

configure_cluster() {
  local h f; h=$(host)
  qconf -sh 2>/dev/null | grep -qx "$h" || qconf -ah "$h" >/dev/null
  qconf -ss 2>/dev/null | grep -qx "$h" || qconf -as "$h" >/dev/null
  f=$SGE_DIR/allhosts.hgrp
  printf 'group_name @allhosts\nhostlist %s\n' "$h" > "$f"; qconf_put hgrp "$f"
  f=$SGE_DIR/$PE.pe
  cat > "$f" <<EOF
pe_name            $PE
slots              $SLOTS
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
  qconf_put p "$f"
  f=$SGE_DIR/$QUEUE.q
  cat > "$f" <<EOF
qname                 $QUEUE
hostlist              @allhosts
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               $PE
rerun                 FALSE
slots                 $SLOTS
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
  qconf_put q "$f"
  # The default scheduler runs every 15 s and accounting is flushed every 15 s: make both 1 s;
  # execds report every 5 s (not 40), so a restarted qmaster sees its queues usable again soon.
  f=$SGE_DIR/sched.conf
  qconf -ssconf > "$f"
  sed -i -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
         -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
         -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' "$f"
  qconf -Msconf "$f" >/dev/null 2>&1
  # -Mconf takes the configuration name from the file name
  install -d -m 0755 "$SGE_DIR/conf"; f=$SGE_DIR/conf/global
  # qconf prints long values over several lines ending in `\`: join them first
  qconf -sconf global | awk '/\\$/ { sub(/\\$/, ""); printf "%s", $0; next } { print }' > "$f"
  sed -i -e 's/^reporting_params .*/reporting_params             accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00/' \
         -e 's/^max_aj_tasks .*/max_aj_tasks                 75000/' \
         -e 's/^load_report_time .*/load_report_time             00:00:05/' "$f"
  qconf -Mconf "$f" >/dev/null 2>&1 || die "qconf -Mconf $f failed: $(qconf -Mconf "$f" 2>&1 | tail -n1)"
  echo "$CONFIG_VERSION" > "$SGE_DIR/configured"
}

start_execd() {
  local pf; pf=$(execd_pid_file)
  if ! live_pid "$pf" sge_execd >/dev/null; then
    local t; t=$(now_ms)
    /usr/sbin/sge_execd </dev/null >>"$LOG_DIR/execd.out" 2>&1 9>&- ||
      fail_with_log "sge_execd failed to start" "$LOG_DIR/execd.out"
    say "sge_execd started in $(secs_since "$t") s"
  fi
  qmod -c "$QUEUE" >/dev/null 2>&1 || true   # clear an error state a test may have left
  qmod -e "$QUEUE" >/dev/null 2>&1 || true
  wait_for 60 chk_execd || fail_with_log "queue $QUEUE has no usable instance" \
    "$SPOOL/execd/"*/messages "$SPOOL/qmaster/messages"
}

lock() {
  exec 9>"$RIG_DIR/.sge.lock"
  flock -w 600 9 || die "$RIG_DIR/.sge.lock still held after 600 s"
}

cmd_up() {
  need_root
  local t0; t0=$(now_ms)
  install -d -m 0755 "$RIG_DIR" "$SGE_DIR" "$LOG_DIR"
  lock
  id "$SSH_USER" >/dev/null 2>&1 && [ -r "$SSH_KEY" ] ||
    die "the SSH part of the rig is missing: run tests/rig/slurm.sh up first"
  if pkg_installed "${PKGS[0]}" && pkg_installed "${PKGS[1]}" && pkg_installed "${PKGS[2]}" &&
     live_pid "$QMASTER_PID" sge_qmaster >/dev/null && live_pid "$(execd_pid_file)" sge_execd >/dev/null &&
     [ "$(cat "$SGE_DIR/configured" 2>/dev/null)" = "$CONFIG_VERSION" ] && check_all quiet; then
    say "rig already UP (checked in $(secs_since "$t0") s)"; return 0
  fi
  ensure_packages
  RESTART=0
  ensure_host_aliases
  start_qmaster
  configure_cluster
  start_execd
  wait_for 20 chk_ssh || die "qstat over ssh as $SSH_USER@$SSH_HOST:$SSH_PORT failed (is tests/rig/slurm.sh up?)"
  say "rig UP in $(secs_since "$t0") s -- eval \"\$(bash $0 env)\" for connection details"
}

cmd_down() {
  need_root
  lock
  stop_pidfile sge_execd "$(execd_pid_file)" sge_execd
  stop_pidfile sge_qmaster "$QMASTER_PID" sge_qmaster
  say "sge rig down"
}

# For fault tests: stop the qmaster only (jobs keep running under sge_execd); `up` restarts it.
cmd_stop_qmaster() {
  need_root
  stop_pidfile sge_qmaster "$QMASTER_PID" sge_qmaster
}

cmd_status() {
  RIG_DOWN=""
  local rc=0; check_all || rc=$?
  local p
  p=$(live_pid "$QMASTER_PID" sge_qmaster || true); printf '  sge_qmaster pid %s\n' "${p:-none}"
  p=$(live_pid "$(execd_pid_file)" sge_execd || true); printf '  sge_execd   pid %s\n' "${p:-none}"
  return "$rc"
}

cmd_env() {
  RIG_DOWN=""
  check_all quiet || { echo "sge rig is not up (down: $RIG_DOWN); run: bash $0 up" >&2; return 1; }
  local home; home=$(getent passwd "$SSH_USER" | cut -d: -f6)
  local -a vars=(
    SCRIPTHUT_RIG_DIR "$RIG_DIR"
    SCRIPTHUT_RIG_SSH_HOST "$SSH_HOST"
    SCRIPTHUT_RIG_SSH_PORT "$SSH_PORT"
    SCRIPTHUT_RIG_SSH_USER "$SSH_USER"
    SCRIPTHUT_RIG_SSH_KEY "$SSH_KEY"
    SCRIPTHUT_RIG_KNOWN_HOSTS "$KNOWN_HOSTS"
    SCRIPTHUT_RIG_SSH_HOME "$home"
    SCRIPTHUT_RIG_SGE_ROOT "$SGE_ROOT"
    SCRIPTHUT_RIG_SGE_CELL "$SGE_CELL"
    SCRIPTHUT_RIG_SGE_QUEUE "$QUEUE"
    SCRIPTHUT_RIG_SGE_PE "$PE"
    SCRIPTHUT_RIG_SGE_SLOTS "$SLOTS"
    SCRIPTHUT_RIG_SGE_SCRIPT "$HERE/sge.sh"
  )
  local i; for ((i = 0; i < ${#vars[@]}; i += 2)); do printf 'export %s=%q\n' "${vars[i]}" "${vars[i+1]}"; done
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  stop-qmaster) cmd_stop_qmaster ;;
  *) echo "usage: $0 up|down|status|env|stop-qmaster" >&2; exit 2 ;;
esac
