#!/usr/bin/env bash
#
# Start/stop a small but real SLURM cluster on this machine for the test suite.
#
#   scripts/slurm-test-cluster.sh start [--clean]   # install (if needed), configure, start, wait until idle
#   scripts/slurm-test-cluster.sh stop              # cancel jobs, stop slurmctld + both slurmd
#   scripts/slurm-test-cluster.sh status            # print sinfo; exit 0 iff both nodes are up
#   scripts/slurm-test-cluster.sh restart [--clean] # stop + start
#   scripts/slurm-test-cluster.sh kill-node NAME    # power loss: SIGKILL every process of node NAME
#   scripts/slurm-test-cluster.sh revive-node NAME  # start NAME's slurmd again, wait until it is idle
#   scripts/slurm-test-cluster.sh node-pid NAME     # host pid of NAME's init (pid 1 of its namespace)
#
# Layout: one slurmctld plus two slurmd daemons (node1, node2) all on localhost,
# each slurmd on its own port with its own spool dir. Each slurmd runs in its own
# UTS and PID namespace, so the nodes are separate hosts as far as jobs can tell:
# `hostname` says node1 or node2, and a job sees only the processes of its own
# node. The network (loopback) and the file system stay shared, as on a cluster
# with a shared file system. A small init (this script, `_node-init`) is pid 1 of
# each node: it starts slurmd in the foreground and reaps the node's orphans;
# when it dies the kernel SIGKILLs every process of the node, which is how
# kill-node simulates a power loss. Every node advertises
# 8 CPUs and 4 "GPUs" (/dev/nvidia0-3 are dummy character devices), so jobs
# that request --gres=gpu:N get a real CUDA_VISIBLE_DEVICES from Slurm even on
# a machine without GPUs. No slurmdbd, so sacct is not available; use squeue /
# scontrol show job instead (finished jobs stay visible for MinJobAge seconds).
#
# The config goes to /etc/slurm, the Debian default location, so plain
# sbatch/squeue/scancel work from any process without extra environment.
# Must run as root (it installs packages, writes /etc/slurm, creates /dev nodes).
#
# --clean starts slurmctld with an empty state (forgets all previous jobs).
#
# A node whose slurmd stops answering is DOWN once it has missed pings for
# SlurmdTimeout (15 s): 25-35 s after a kill-node here. Its batch jobs are then
# requeued (or end NODE_FAIL with --no-requeue). Once its slurmd registers again it returns to service by itself
# (ReturnToService=2); revive-node also resumes it in case it was left DOWN.
#
# Tunables (environment):
#   SLURM_TEST_WAIT   seconds to wait for daemons / nodes (default 60)

set -euo pipefail

readonly CONF_DIR=/etc/slurm
readonly STATE_DIR=/var/lib/slurm-test
readonly LOG_DIR=/var/log/slurm-test
readonly RUN_DIR=${STATE_DIR}/run
readonly CLUSTER_NAME=testcluster
readonly NODES=(node1 node2)
readonly NODE_LIST="node[1-2]"
readonly GPUS_PER_NODE=4
readonly WAIT_SECONDS=${SLURM_TEST_WAIT:-60}
readonly CTLD_PIDFILE=${RUN_DIR}/slurmctld.pid
# Marker so we never silently overwrite a slurm.conf this script did not write.
readonly MARKER="# Managed by scripts/slurm-test-cluster.sh"
SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF

log() { echo "[slurm-test] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

require_root() {
    [[ ${EUID} -eq 0 ]] || die "must run as root (writes ${CONF_DIR}, /dev/nvidia*, starts daemons)"
}

# The host pid of node $1's init, the pid 1 of its namespaces. (slurmd's own pid
# file holds its pid inside the node's namespace, which means nothing out here.)
node_pidfile() { echo "${RUN_DIR}/node-$1.pid"; }

# True if pid file $1 names a live process whose command is $2. Checking the
# name guards against a stale pid file whose pid was reused after a reboot;
# a zombie (exited, not yet reaped) does not count as running.
pidfile_alive() {
    local pid comm state
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ ${pid} =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/${pid}/comm" 2>/dev/null) || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/${pid}/status" 2>/dev/null) || return 1
    [[ ${comm} == "$2" && ${state} != Z ]]
}

ctld_alive() { pidfile_alive "${CTLD_PIDFILE}" slurmctld; }

# Prints the host pid of node $1's init if it is running. The command line is
# checked too: the init is a bash running this script's `_node-init NAME`.
node_init_pid() {
    local pidfile pid cmdline
    pidfile=$(node_pidfile "$1")
    pidfile_alive "${pidfile}" bash || return 1
    pid=$(<"${pidfile}")
    cmdline=$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null) || return 1
    [[ ${cmdline} == *" _node-init $1 "* ]] || return 1
    echo "${pid}"
}

# True if node $1's slurmd runs: a live child of the node's init named slurmd.
slurmd_alive() {
    local init child comm state
    init=$(node_init_pid "$1") || return 1
    for child in $(cat "/proc/${init}/task/${init}/children" 2>/dev/null); do
        comm=$(cat "/proc/${child}/comm" 2>/dev/null) || continue
        state=$(awk '/^State:/ {print $2}' "/proc/${child}/status" 2>/dev/null) || continue
        [[ ${comm} == slurmd && ${state} != Z ]] && return 0
    done
    return 1
}

valid_node() {
    local n
    for n in "${NODES[@]}"; do
        [[ $1 == "${n}" ]] && return 0
    done
    die "unknown node '$1' (nodes: ${NODES[*]})"
}

# --------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------

ensure_packages() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null \
        && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v qsub >/dev/null; then
        return 0
    fi
    log "installing slurm-wlm, its PBS wrappers (qsub, qstat, qdel) and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Recommends would add ~30 optional plugin/-dev packages we do not use.
    # slurm-wlm-torque runs #PBS scripts through Slurm: enough to run the PBS launcher end to end.
    local pkgs=(slurm-wlm slurm-wlm-torque munge) opts=(-y -q --no-install-recommends)
    local apt_log=${LOG_DIR}/apt.log
    mkdir -p "${LOG_DIR}"
    # A fresh machine may have empty package lists; only update when needed.
    if ! apt-get install "${opts[@]}" "${pkgs[@]}" >"${apt_log}" 2>&1; then
        if ! { apt-get update -q && apt-get install "${opts[@]}" "${pkgs[@]}"; } >>"${apt_log}" 2>&1; then
            tail -n 20 "${apt_log}" >&2
            die "apt-get install failed (full output in ${apt_log})"
        fi
    fi
}

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

render_slurm_conf() {
    # slurmctld only starts on a host whose short name matches SlurmctldHost;
    # the address in parentheses keeps all traffic on loopback.
    local host
    host=$(hostname -s)
    cat <<EOF
${MARKER}
# Regenerated on every start; edit the script, not this file.
ClusterName=${CLUSTER_NAME}
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=6817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Also the delay before a requeued job may start again (default 120 s).
AuthInfo=cred_expire=10

StateSaveLocation=${STATE_DIR}/slurmctld
SlurmdSpoolDir=${STATE_DIR}/slurmd-%n
SlurmctldPidFile=${CTLD_PIDFILE}
# slurmd's pid inside its node's PID namespace (see node-%n.pid for the host pid).
SlurmdPidFile=${RUN_DIR}/slurmd-%n.nspid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info

# The cgroup plugins need a writable, delegated cgroup tree, which containers
# and CI VMs often lack; plain process tracking is enough for tests.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# The default /bin/mail is usually absent: "error: Configured MailProg is invalid".
MailProg=/bin/true

SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
PreemptType=preempt/none
GresTypes=gpu

# Short timeouts keep the test suite fast. slurmctld pings the slurmds and sets a
# node that has not answered for SlurmdTimeout s DOWN: a killed node is DOWN
# some 25-35 s later. Not lower: on a loaded machine a slow answer would take a
# healthy node down with its jobs.
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=15
# SIGTERM to SIGKILL, at a time limit or scancel: Slurm's default. A job stopped at its limit
# has this long to fail its trials, queue their parameters and requeue itself; on a loaded
# machine that can take longer than a few seconds.
KillWait=30
InactiveLimit=0
OverTimeLimit=0
# Finished jobs stay visible in squeue/scontrol for this many seconds.
MinJobAge=120
# A node that was down (for any reason, e.g. kill-node) comes back by itself
# once its slurmd registers with a valid configuration.
ReturnToService=2
JobRequeue=1
MaxArraySize=10001
MaxJobCount=50000

# The machine has fewer real cores than declared; trust the config, not the hardware.
SlurmdParameters=config_overrides

NodeName=${NODE_LIST} NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001-17002 CPUs=8 RealMemory=4000 Gres=gpu:${GPUS_PER_NODE} State=UNKNOWN
PartitionName=debug Nodes=${NODE_LIST} Default=YES MaxTime=INFINITE State=UP
EOF
}

render_gres_conf() {
    cat <<EOF
${MARKER}
NodeName=${NODE_LIST} Name=gpu File=/dev/nvidia[0-$((GPUS_PER_NODE - 1))]
EOF
}

# Set by write_config: "yes" if slurm.conf or gres.conf had to be (re)written.
CONFIG_CHANGED=no

# Write $2 (content) to $1 unless it already has exactly that content.
# (Kept out of if/&& contexts so that set -e still catches a failing cp/mv.)
install_file() {
    local target=$1 content=$2 tmp
    if [[ -f ${target} ]] && [[ "$(<"${target}")" == "${content}" ]]; then
        return 0
    fi
    if [[ -f ${target} ]] && ! grep -qxF "${MARKER}" "${target}"; then
        local backup
        backup="${target}.orig.$(date +%Y%m%d%H%M%S)"
        log "backing up existing ${target} to ${backup}"
        cp -p "${target}" "${backup}"
    fi
    tmp=$(mktemp "${target}.XXXXXX")
    printf '%s\n' "${content}" >"${tmp}"
    chmod 644 "${tmp}"
    mv -f "${tmp}" "${target}"
    CONFIG_CHANGED=yes
}

write_config() {
    mkdir -p "${CONF_DIR}"
    install_file "${CONF_DIR}/slurm.conf" "$(render_slurm_conf)"
    install_file "${CONF_DIR}/gres.conf" "$(render_gres_conf)"
}

config_up_to_date() {
    [[ -f ${CONF_DIR}/slurm.conf && -f ${CONF_DIR}/gres.conf ]] \
        && [[ "$(<"${CONF_DIR}/slurm.conf")" == "$(render_slurm_conf)" ]] \
        && [[ "$(<"${CONF_DIR}/gres.conf")" == "$(render_gres_conf)" ]]
}

# Slurm's gpu gres plugin only needs the device files to exist; it never opens
# them. Dummy char devices (same major/minor as /dev/null) are enough to get
# CUDA_VISIBLE_DEVICES set per job.
create_fake_gpus() {
    local i dev
    for ((i = 0; i < GPUS_PER_NODE; i++)); do
        dev=/dev/nvidia${i}
        if [[ ! -e ${dev} ]]; then
            mknod -m 666 "${dev}" c 1 3
        elif [[ ! -c ${dev} ]]; then
            die "${dev} exists but is not a character device"
        fi
    done
}

prepare_dirs() {
    local n
    mkdir -p "${STATE_DIR}/slurmctld" "${RUN_DIR}" "${LOG_DIR}"
    for n in "${NODES[@]}"; do
        mkdir -p "${STATE_DIR}/slurmd-${n}"
    done
}

# --------------------------------------------------------------------------
# Daemons
# --------------------------------------------------------------------------

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    munge_ok && return 0
    log "starting munged"
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
    fi
    # No init system here, so /run/munge (socket dir) may not exist.
    mkdir -p /run/munge
    if id munge >/dev/null 2>&1; then
        chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
    else
        # As root munged complains about file ownership unless forced.
        /usr/sbin/munged --force
    fi
    local i
    for ((i = 0; i < 10; i++)); do
        munge_ok && return 0
        sleep 0.5
    done
    die "munged did not come up (munge -n | unmunge fails)"
}

start_slurmctld() {
    local clean=$1
    ctld_alive && return 0
    log "starting slurmctld"
    local args=()
    [[ ${clean} == yes ]] && args+=(-c)
    slurmctld "${args[@]}"
    # slurmctld forks into the background before it listens. Wait until it
    # answers so the slurmds can register right away, and so a config error
    # is reported now instead of as a 60 s node timeout.
    local started=${SECONDS}
    until scontrol ping 2>/dev/null | grep -q 'is UP'; do
        # Allow a few seconds for the pid file to appear before calling it dead.
        if ((SECONDS - started >= WAIT_SECONDS)) || { ((SECONDS - started > 5)) && ! ctld_alive; }; then
            show_logs
            die "slurmctld did not come up"
        fi
        sleep 0.5
    done
}

# pid 1 of a node's namespaces: names the host, runs slurmd in the foreground,
# and reaps the orphans that pid 1 inherits (slurmstepd, job processes). It
# exits with slurmd, and its death kills every process of the node.
node_init() {
    local node=$1 child
    hostname "${node}"
    # -N picks the NodeName= entry; port, spool dir, pid and log file follow from it.
    slurmd -D -N "${node}" &
    child=$!
    # pid 1 only gets the signals it handles: pass a SIGTERM (stop) on to slurmd.
    trap 'kill -TERM "${child}" 2>/dev/null' TERM INT HUP
    while kill -0 "${child}" 2>/dev/null; do
        wait -n || true
    done
}

start_slurmd() {
    local node=$1 pidfile upid init="" i
    slurmd_alive "${node}" && return 0
    pidfile=$(node_pidfile "${node}")
    if init=$(node_init_pid "${node}"); then
        # An init without its slurmd: end the old node before starting a new one.
        kill -KILL "${init}" 2>/dev/null || true
        wait_gone "${init}"
    fi
    rm -f "${pidfile}"
    log "starting slurmd ${node} (own hostname and process table)"
    # setsid: the node outlives the shell or test that started it, as a daemon does.
    setsid unshare --uts --pid --fork --mount-proc -- bash "${SELF}" _node-init "${node}" \
        </dev/null >>"${LOG_DIR}/node-${node}.out" 2>&1 &
    upid=$!
    # unshare forks the init (pid 1 inside) and waits for it: the init is its only child.
    for ((i = 0; i < 100; i++)); do
        init=$(tr -d ' ' <"/proc/${upid}/task/${upid}/children" 2>/dev/null || true)
        [[ -n ${init} ]] && break
        kill -0 "${upid}" 2>/dev/null || break
        sleep 0.1
    done
    [[ ${init} =~ ^[0-9]+$ ]] || { show_logs; die "node ${node} did not start (see ${LOG_DIR}/node-${node}.out)"; }
    echo "${init}" >"${pidfile}"
    for ((i = 0; i < 100; i++)); do
        slurmd_alive "${node}" && return 0
        kill -0 "${init}" 2>/dev/null || break
        sleep 0.1
    done
    show_logs
    die "slurmd ${node} did not start (see ${LOG_DIR}/node-${node}.out)"
}

# Wait (up to 10 s) until process $1 is gone or a zombie.
wait_gone() {
    local i state
    for ((i = 0; i < 100; i++)); do
        state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 0
        [[ ${state} == Z ]] && return 0
        sleep 0.1
    done
    return 1
}

# Prints "node state" lines, e.g. "node1 idle", "node2 down*".
node_states() {
    sinfo -h -N -o '%N %T' 2>/dev/null | sort -u
}

# A trailing * (not responding), ~ (powered off), # (powering up), etc. means
# not usable yet, so only plain states count as up.
nodes_up() {
    local states n
    states=$(node_states) || return 1
    for n in "${NODES[@]}"; do
        grep -Eq "^${n} (idle|mixed|allocated|completing)$" <<<"${states}" || return 1
    done
}

daemons_alive() {
    local n
    ctld_alive || return 1
    for n in "${NODES[@]}"; do
        slurmd_alive "${n}" || return 1
    done
}

show_logs() {
    local f
    for f in "${LOG_DIR}"/slurmctld.log "${LOG_DIR}"/slurmd-*.log; do
        [[ -f ${f} ]] || continue
        echo "----- last lines of ${f} -----" >&2
        # Debian's build has the PMIx MPI plugin but not libpmix; its load
        # errors on every start are harmless noise, so leave them out here.
        grep -v -e 'pmix' -e 'MPI: Cannot create context' "${f}" | tail -n 20 >&2 || true
    done
}

wait_for_nodes() {
    local deadline=$((SECONDS + WAIT_SECONDS)) states resumed=no
    while ((SECONDS < deadline)); do
        if nodes_up; then
            return 0
        fi
        states=$(node_states || true)
        # Nodes left down/drained by an earlier run (or registering late) will
        # not be scheduled until resumed. Only do this once the slurmd has
        # answered (no trailing '*'), otherwise the resume just bounces.
        if [[ ${resumed} == no ]] && grep -Eq ' (down|drained|draining|fail)$' <<<"${states}"; then
            log "resuming nodes: $(tr '\n' ' ' <<<"${states}")"
            scontrol update nodename="${NODE_LIST}" state=resume >/dev/null 2>&1 || true
            resumed=yes
        fi
        sleep 1
    done
    log "nodes not idle after ${WAIT_SECONDS}s:"
    sinfo -N -l >&2 || true
    scontrol show node "${NODE_LIST}" 2>/dev/null | grep -E 'NodeName|State=|Reason=' >&2 || true
    show_logs
    return 1
}

# Wait until the daemon in pid file $1 (command $2) is gone. 'scontrol
# shutdown' normally stops it; escalate to SIGTERM after 5 s, SIGKILL at the end.
stop_pidfile() {
    local pidfile=$1 comm=$2 label=$3 pid i
    pidfile_alive "${pidfile}" "${comm}" || { rm -f "${pidfile}"; return 0; }
    pid=$(<"${pidfile}")
    for ((i = 0; i < 2 * WAIT_SECONDS; i++)); do
        pidfile_alive "${pidfile}" "${comm}" || break
        if ((i == 10)); then
            kill -TERM "${pid}" 2>/dev/null || true
        fi
        sleep 0.5
    done
    if pidfile_alive "${pidfile}" "${comm}"; then
        log "${label} (pid ${pid}) ignored SIGTERM; sending SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
    fi
    rm -f "${pidfile}"
}

# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

cmd_start() {
    local clean=no
    case "${1:-}" in
        --clean) clean=yes ;;
        "") ;;
        *) usage ;;
    esac
    require_root
    ensure_packages

    if [[ ${clean} == no ]] && config_up_to_date && daemons_alive && nodes_up; then
        log "already running"
        return 0
    fi

    prepare_dirs
    create_fake_gpus
    # Daemons only read the config at startup, so a changed config (or a
    # clean start) needs a full restart of whatever is running.
    write_config
    if [[ ${CONFIG_CHANGED} == yes || ${clean} == yes ]]; then
        if daemons_alive_any; then
            log "configuration changed or --clean given; restarting daemons"
            cmd_stop
        fi
    fi

    start_munge
    start_slurmctld "${clean}"
    local n
    for n in "${NODES[@]}"; do
        start_slurmd "${n}"
    done

    if ! wait_for_nodes; then
        die "cluster did not become ready"
    fi
    log "cluster up: $(node_states | tr '\n' ' ')"
}

daemons_alive_any() {
    local n
    ctld_alive && return 0
    for n in "${NODES[@]}"; do
        node_init_pid "${n}" >/dev/null && return 0
    done
    return 1
}

# Running jobs would otherwise outlive slurmd as orphaned slurmstepd
# processes; a test cluster should leave nothing behind when stopped.
cancel_all_jobs() {
    local jobs i
    jobs=$(squeue -h -o '%A' 2>/dev/null) || return 0
    [[ -n ${jobs} ]] || return 0
    log "cancelling $(wc -w <<<"${jobs}") job(s)"
    # shellcheck disable=SC2086  # one job id per word
    scancel ${jobs} 2>/dev/null || true
    # Tasks get SIGTERM, then SIGKILL KillWait (30 s) later; workers leave well before that.
    for ((i = 0; i < 70; i++)); do
        [[ -z $(squeue -h -t running,completing,configuring -o '%A' 2>/dev/null) ]] && return 0
        sleep 0.5
    done
    log "some jobs still completing; shutting down anyway"
}

cmd_stop() {
    require_root
    if ! daemons_alive_any; then
        log "not running"
        return 0
    fi
    log "stopping"
    if ctld_alive; then
        cancel_all_jobs
        # Stops slurmctld and tells every slurmd to exit as well.
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    local n
    for n in "${NODES[@]}"; do
        # slurmd exits on 'scontrol shutdown', and its node's init with it.
        stop_pidfile "$(node_pidfile "${n}")" bash "node ${n}"
    done
    stop_pidfile "${CTLD_PIDFILE}" slurmctld slurmctld
    # munged is left running: it is harmless and other tools may rely on it.
    log "stopped"
}

cmd_status() {
    if ! daemons_alive_any; then
        log "not running"
        return 1
    fi
    sinfo || true
    # slurmctld only notices a dead slurmd after SlurmdTimeout, so check locally too.
    if ! daemons_alive; then
        log "a daemon is not running (see ${RUN_DIR}, ${LOG_DIR})"
        return 1
    fi
    nodes_up
}

# A power loss: SIGKILL the node's init, and with it (the kernel sees to that)
# every process in its PID namespace at once: slurmd, slurmstepd, the jobs.
cmd_kill_node() {
    local node=${1:-} init
    [[ -n ${node} ]] || usage
    require_root
    valid_node "${node}"
    if ! init=$(node_init_pid "${node}"); then
        log "node ${node} is not running"
        return 0
    fi
    log "killing node ${node} (init pid ${init}) and every process on it"
    kill -KILL "${init}"
    wait_gone "${init}" || die "node ${node} (pid ${init}) did not die"
    rm -f "$(node_pidfile "${node}")"
}

# Start a killed node's slurmd again; it is back once slurmctld has it idle.
cmd_revive_node() {
    local node=${1:-} deadline state
    [[ -n ${node} ]] || usage
    require_root
    valid_node "${node}"
    ctld_alive || die "slurmctld is not running; use start"
    start_slurmd "${node}"
    deadline=$((SECONDS + WAIT_SECONDS))
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -n "${node}" -o '%T' 2>/dev/null || true)
        case "${state}" in
            idle | mixed | allocated | completing)
                log "node ${node} is back: ${state}"
                return 0
                ;;
            # Registered (no trailing '*') but still DOWN or drained: return it to service.
            down | drained | draining | fail)
                scontrol update nodename="${node}" state=resume >/dev/null 2>&1 || true
                ;;
        esac
        sleep 1
    done
    sinfo -N -l >&2 || true
    show_logs
    die "node ${node} not idle after ${WAIT_SECONDS}s"
}

cmd_node_pid() {
    local node=${1:-}
    [[ -n ${node} ]] || usage
    valid_node "${node}"
    node_init_pid "${node}" || die "node ${node} is not running"
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case "${cmd}" in
        start) cmd_start "$@" ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        kill-node) cmd_kill_node "$@" ;;
        revive-node) cmd_revive_node "$@" ;;
        node-pid) cmd_node_pid "$@" ;;
        _node-init) node_init "$@" ;;
        restart)
            cmd_stop
            cmd_start "$@"
            ;;
        *) usage ;;
    esac
}

main "$@"
