#!/bin/bash
# A stand-in for `sftctl-train run RUN_DIR` until the runtime exists: writes the records that
# docs/ledger.md specifies (attempt, metrics, heartbeat, events, result) from a shell.
# Behaviour is steered from the file system so tests can change it between submits:
#   <sweep dir>/fail-seed-<seed>   present: the run fails (exit 3) after one step
#   SFT_STEPS (default 3) steps, SFT_STEP_S (default 0.2) seconds each
set -euo pipefail
[ "${1:-}" = run ] || { echo "usage: fake-train.sh run RUN_DIR" >&2; exit 2; }
dir=$2
cd "$dir"
seed=$(grep -o '"seed": *[0-9]*' config.json | grep -o '[0-9]*$')
steps=${SFT_STEPS:-3}
step_s=${SFT_STEP_S:-0.2}
now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }
job=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
job=${job:-${SLURM_JOB_ID:-${SFTCTL_JOB_ID:-unknown}}}
attempt=$(( ${SLURM_RESTART_COUNT:-0} + 1 ))
mkdir -p events heartbeat
rank=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}
beat() { # $1 = step
  printf '{"at":"%s","rank":%d,"step":%d,"pid":%d,"host":"%s","job_id":"%s"}' "$(now)" "$rank" "$1" $$ "$(hostname -s)" "$job" > "heartbeat/.rank-$rank.tmp"
  mv "heartbeat/.rank-$rank.tmp" "heartbeat/rank-$rank.json"
}
if [ "$rank" != 0 ]; then
  # Other ranks of a multi-node job only show they ran.
  beat 0
  exit 0
fi
# The job script forwards Slurm's USR1 (time limit near) here: record it as the runtime would.
trap 'printf '"'"'{"at":"%s","rank":0,"kind":"preempted","step":%d,"signal":"USR1"}\n'"'"' "$(now)" "${step:-0}" >> events/rank-0.jsonl' USR1
beat 0
printf '{"job_id":"%s","attempt":%d,"started_at":"%s","nodes":["%s"],"world_size":1,"provenance":{"sftctl_version":"test","binary_sha256":"%s"},"total_steps":%d,"total_samples":%d}\n' \
  "$job" "$attempt" "$(now)" "$(hostname -s)" "$(sha256sum "$0" | cut -c1-64)" "$steps" "$((steps * 8))" >> attempts.jsonl
printf '{"at":"%s","rank":0,"kind":"started","job_id":"%s","attempt":%d}\n' "$(now)" "$job" "$attempt" >> events/rank-0.jsonl
echo "fake-train: run $(basename "$dir") seed $seed job $job on $(hostname -s)"
for step in $(seq 1 "$steps"); do
  # In the background, so the USR1 trap runs at once.
  sleep "$step_s" & wait $! || wait $! || true
  printf '{"step":%d,"epoch":%s,"samples_seen":%d,"tokens":%d,"loss_tokens":%d,"loss":%s,"grad_norm":1.25,"lr":2e-05,"step_time_s":%s,"tokens_per_s":5000.0,"at":"%s"}\n' \
    "$step" "0.$step" "$((step * 8))" "$((step * 1000))" "$((step * 400))" "2.$((9 - step))" "$step_s" "$(now)" >> metrics.jsonl
  beat "$step"
  if [ -e "../../fail-seed-$seed" ]; then
    printf '{"at":"%s","rank":0,"kind":"error","message":"failing on purpose (seed %s)"}\n' "$(now)" "$seed" >> events/rank-0.jsonl
    echo "fake-train: failing on purpose" >&2
    exit 3
  fi
done
printf '{"status":"completed","job_id":"%s","final_step":%d,"samples_seen":%d,"tokens":%d,"final_loss":2.1,"wall_s":1.0,"at":"%s"}' \
  "$job" "$steps" "$((steps * 8))" "$((steps * 1000))" "$(now)" > .result.tmp
mv .result.tmp result.json
printf '{"at":"%s","rank":0,"kind":"finished","step":%d}\n' "$(now)" "$steps" >> events/rank-0.jsonl
echo "fake-train: done"
