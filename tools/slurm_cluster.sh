# Source this file (bash): starts a one-machine SLURM cluster (munged, slurmctld, slurmd) in a temporary folder.
#   source tools/slurm_cluster.sh && slurm_up     sets SLURM_CONF and SLURM_DIR; the daemons run until slurm_down
# Debian's slurm-wlm 22.05 as tried in issue 29: no cgroup.conf (proctrack/linuxproc, task/none), no accounting
# database (accounting_storage/none: sacct cannot answer, which is why the launcher asks squeue).
# Needs root (slurmd starts jobs as their user) and the packages slurm-wlm and munge.

slurm_up() {
    SLURM_DIR=$(mktemp -d /tmp/kdnotes-slurm.XXXXXX)
    local host ports
    host=$(hostname -s)
    ports=($(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'))  # free ports: another cluster on this machine keeps its own
    mkdir -p "$SLURM_DIR"/{state,spool,munge}
    chmod 700 "$SLURM_DIR/munge"
    dd if=/dev/urandom of="$SLURM_DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$SLURM_DIR/munge/munge.key"
    munged --force --key-file="$SLURM_DIR/munge/munge.key" --socket="$SLURM_DIR/munge/munge.sock" \
        --pid-file="$SLURM_DIR/munge/munged.pid" --log-file="$SLURM_DIR/munge/munged.log" \
        --seed-file="$SLURM_DIR/munge/munged.seed"
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat > "$SLURM_DIR/slurm.conf" <<EOF
ClusterName=kdnotes-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
AuthType=auth/munge
AuthInfo=socket=$SLURM_DIR/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$SLURM_DIR/slurm.conf" SLURM_DIR
    slurmctld -D -f "$SLURM_CONF" > "$SLURM_DIR/slurmctld.out" 2>&1 &
    echo $! > "$SLURM_DIR/slurmctld.bgpid"
    slurmd -D -f "$SLURM_CONF" > "$SLURM_DIR/slurmd.out" 2>&1 &
    echo $! > "$SLURM_DIR/slurmd.bgpid"
    for _ in $(seq 60); do  # up to 30 s for the node to register
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then echo "slurm: one-node cluster up in $SLURM_DIR"; return 0; fi
        sleep 0.5
    done
    echo "slurm: the node did not come up; logs in $SLURM_DIR" >&2
    tail -5 "$SLURM_DIR"/slurmctld.log "$SLURM_DIR"/slurmd.log >&2
    return 1
}

slurm_down() {  # stops the daemons this file started (by their process ids) and removes the folder
    local f
    for f in slurmd slurmctld; do
        [ -f "$SLURM_DIR/$f.bgpid" ] && kill "$(cat "$SLURM_DIR/$f.bgpid")" 2>/dev/null
    done
    sleep 0.5
    [ -f "$SLURM_DIR/munge/munged.pid" ] && kill "$(cat "$SLURM_DIR/munge/munged.pid")" 2>/dev/null
    [ -n "${KEEP_SLURM_DIR:-}" ] || rm -rf "$SLURM_DIR"
}
