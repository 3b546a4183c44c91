#!/usr/bin/env bash
# monitor_jax on a GKE TPU cluster made by xpk (https://github.com/AI-Hypercomputer/xpk): one `xpk workload create`
# with the exit-code policy of launch/README.md. xpk writes a JobSet much like tpu.yaml beside this script.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/gke/xpk.sh [--dry-run] --cluster=CLUSTER --workload=NAME --tpu-type=TYPE --image=IMAGE
                         [--num-slices=N] [--max-restarts=N] [--grace-seconds=S] [other xpk options]
                         -- COMMAND...

  --tpu-type      e.g. v5litepod-16, v4-16, v5p-16 (xpk's names)
  --image         an image with monitor_jax installed (xpk's --docker-image)
  --max-restarts  restarts of the whole workload (default 10): after a crash (exit 1) or a preemption
                  (exit 75, checkpoint saved); xpk counts both. Exit 2, a config or data error, fails at once.
  --grace-seconds time between SIGTERM and SIGKILL, to finish the step and save (default 300)
Options this script does not know (--project=P, --zone=Z, --priority=high, --env=K=V, ...) go to xpk as they
are. COMMAND is the words after --, joined and run by the container's shell. The xpk command is printed
(after "+ ") before it runs; --dry-run prints it and runs nothing.

  launch/gke/xpk.sh --cluster=my-cluster --workload=mj-demo --tpu-type=v5litepod-16 --image=IMAGE -- \
      python -m monitor_jax.main train --config=configs/demo.py --config.workdir=/shared/runs/demo
EOF
}

die() { echo "xpk.sh: $*" >&2; exit 2; }

# One word, quoted for a POSIX shell when it needs it ('...' with each ' written '\'').
q() {
  case $1 in
    '') printf "''" ;;
    *[!A-Za-z0-9_./=:,@%+-]*)
      local rest=$1 out="'"
      while [[ $rest == *\'* ]]; do out+="${rest%%\'*}'\\''"; rest=${rest#*\'}; done
      printf '%s' "$out$rest'" ;;
    *) printf '%s' "$1" ;;
  esac
}

dry_run=0 cluster="" workload="" tpu_type="" image="" slices=1 max_restarts=10 grace=300
extra=() cmd=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --cluster=*) cluster=${1#*=} ;;
    --workload=*) workload=${1#*=} ;;
    --tpu-type=*) tpu_type=${1#*=} ;;
    --image=*) image=${1#*=} ;;
    --num-slices=*) slices=${1#*=} ;;
    --max-restarts=*) max_restarts=${1#*=} ;;
    --grace-seconds=*) grace=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    --) shift; cmd=("$@"); break ;;
    --*) extra+=("$1") ;;
    *) die "unexpected argument $1 (the command goes after --)" ;;
  esac
  shift
done
for required in cluster workload tpu_type image; do
  [ -n "${!required}" ] || die "--${required//_/-}=... is required (see --help)"
done
[ "${#cmd[@]}" -gt 0 ] || die "no command: give it after --"

# Exit 1 (a Python traceback) and 75 (preempted, saved) restart the workload, beside xpk's own 42 and 127-255;
# any other code, 2 among them, fails it.
args=(xpk workload create --cluster="$cluster" --workload="$workload" --tpu-type="$tpu_type"
      --num-slices="$slices" --docker-image="$image" --command="${cmd[*]}"
      --max-restarts="$max_restarts" "--restart-on-exit-codes=1,75" --termination-grace-period-seconds="$grace"
      ${extra[@]+"${extra[@]}"})
line="+"
for word in "${args[@]}"; do line+=" $(q "$word")"; done
echo "$line" >&2
if [ "$dry_run" = 0 ]; then "${args[@]}"; fi
