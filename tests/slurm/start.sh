#!/usr/bin/env bash
# Starts the test Slurm cluster on loopback: munge, MariaDB + slurmdbd, slurmctld and two
# one-CPU nodes (`slurmd -N n1`, `slurmd -N n2`). Idempotent: a daemon that already answers is
# left alone, so tests/run.sh and the Rust harness may both call it. Needs root.
# Also writes /etc/slurm-noacct/slurm.conf: the same controller seen by a client whose
# configuration has accounting off (sacct then says "accounting storage is disabled"), and
# creates the unprivileged user `sftctl-test` that permission-sensitive tests run as.
set -euo pipefail
HOST=$(hostname -s)
LOG=/var/log/slurm
mkdir -p /var/spool/slurmctld /var/spool/slurmd-n1 /var/spool/slurmd-n2 "$LOG" /run/munge /etc/slurm-noacct
chown munge:munge /run/munge 2>/dev/null || true

id sftctl-test >/dev/null 2>&1 || useradd --create-home --shell /bin/bash sftctl-test

write_conf() { # $1 = accounting storage type, $2 = gather type
  cat <<CONF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmctldPidFile=/run/slurmctld.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=$1
AccountingStorageHost=localhost
JobAcctGatherType=$2
SlurmctldLogFile=$LOG/slurmctld.log
MpiDefault=none
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmdLogFile=$LOG/slurmd-%n.log
MinJobAge=5
KillWait=2
InactiveLimit=0
MaxArraySize=1001
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001 CPUs=1 RealMemory=4000
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17002 CPUs=1 RealMemory=4000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
}

want=$(write_conf accounting_storage/slurmdbd jobacct_gather/linux)
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$want" ]; then
  printf '%s\n' "$want" >/etc/slurm/slurm.conf
fi
write_conf accounting_storage/none jobacct_gather/none >/etc/slurm-noacct/slurm.conf
cp /etc/slurm/plugstack.conf /etc/slurm-noacct/ 2>/dev/null || true

wait_for() { # $1 = description, rest = command
  local what=$1; shift
  for _ in $(seq 1 120); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "start.sh: timed out waiting for $what" >&2; return 1
}

pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged --force
wait_for munge munge -n

if ! mysqladmin ping >/dev/null 2>&1; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  (setsid mysqld_safe >/dev/null 2>&1 &)
  wait_for mariadb mysqladmin ping
fi
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmtest';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

if [ ! -f /etc/slurm/slurmdbd.conf ]; then
  cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmtest
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
fi
pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd
wait_for slurmdbd sacctmgr -n list cluster
sacctmgr -n -P list cluster format=cluster | grep -qx local || sacctmgr -i add cluster local >/dev/null
sacctmgr -n -P list account format=account | grep -qx sft || sacctmgr -i add account sft >/dev/null
for u in root sftctl-test; do
  sacctmgr -n -P list user format=user | grep -qx "$u" || sacctmgr -i add user "$u" account=sft >/dev/null
done

pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
wait_for slurmctld scontrol ping
for n in n1 n2; do
  pgrep -f "slurmd -N $n" >/dev/null || /usr/sbin/slurmd -N "$n"
done
idle() { [ "$(sinfo -h -N -o '%t' | grep -c -E '^(idle|mix|alloc)')" -ge 2 ]; }
if ! idle; then
  scontrol update nodename=n1,n2 state=resume >/dev/null 2>&1 || true
fi
wait_for "nodes idle" idle
echo "start.sh: cluster up ($(sinfo -h -N -o '%N=%t' | tr '\n' ' '))" >&2
