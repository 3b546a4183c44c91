#!/usr/bin/env bash
# monitor_jax on a Cloud TPU VM or pod slice, through gcloud. See usage() below and launch/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_vm.sh [--dry-run] SUBCOMMAND --name=NAME --zone=ZONE [--project=PROJECT] [options] [-- COMMAND...]

  create  create the TPU VM (a pod slice has several hosts, "workers"):
            --type=TYPE        accelerator type, e.g. v4-16 (2 hosts), v5litepod-16 (4 hosts), v5p-16 (2 hosts)
            --version=VERSION  TPU software version (default: by TYPE, e.g. tpu-ubuntu2204-base for v4)
            --spot             a Spot TPU (cheaper; preemptible)
            --queued           through a queued resource (waits until it is ACTIVE); with --spot, a Spot one
  setup   on every worker: clone --repo=URL at --ref=REF (a branch, tag or commit; default main) into
          ~/monitor_jax, `pip install -e ".[tpu]"` it, and mount the shared work directory at --mount=PATH
          (default: shared, i.e. ~/shared; a relative path is under the worker's home) from
            --bucket=BUCKET    a Cloud Storage bucket (gcsfuse), or
            --nfs=HOST:/SHARE  an NFS share (e.g. Filestore)
  run     start COMMAND (the words after --, joined and run by each worker's shell in ~/monitor_jax, as ssh
          does) on all workers in the background, appending to ~/monitor_jax.log; then follow worker 0's log
          (Ctrl-C stops following, not the run; --no-follow: return at once)
  logs    follow a worker's log (--worker=N, default 0)
  stop    send SIGTERM to the command on all workers: the trainer saves a checkpoint and exits 75
  delete  delete the TPU VM (--queued: the queued resource and its TPU VM)
  up      create, setup, then run COMMAND when one is given

Every gcloud command is printed (after "+ ") before it runs; --dry-run prints them and runs nothing.
The work directory must be the shared mount, the same path on every worker:

  launch/tpu_vm.sh up --name=mj --zone=us-central2-b --type=v4-16 --spot \
      --repo=https://github.com/ORG/monitor_jax --ref=main --bucket=my-bucket -- \
      python3 -m monitor_jax.main train --config=configs/demo.py '--config.workdir=$HOME/shared/runs/demo'
  launch/tpu_vm.sh delete --name=mj --zone=us-central2-b

A preempted or stopped run resumes when the same command runs again with the same work directory
(on a Spot TPU, after `create` and `setup` of a new one).
EOF
}

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

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

qall() {
  local out="" word
  for word in "$@"; do out+="${out:+ }$(q "$word")"; done
  printf '%s' "$out"
}

dry_run=0 sub="" name="" zone="" project="" type="" version="" spot=0 queued=0
repo="" ref="main" bucket="" nfs="" mount="shared" follow=1 worker=0
cmd=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --type=*) type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) spot=1 ;;
    --queued) queued=1 ;;
    --repo=*) repo=${1#*=} ;;
    --ref=*) ref=${1#*=} ;;
    --bucket=*) bucket=${1#*=} ;;
    --nfs=*) nfs=${1#*=} ;;
    --mount=*) mount=${1#*=} ;;
    --no-follow) follow=0 ;;
    --worker=*) worker=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    --) shift; cmd=("$@"); break ;;
    -*) die "unknown option $1 (options take the form --key=value; see --help)" ;;
    *) [ -z "$sub" ] || die "unexpected argument $1 (the command goes after --)"; sub=$1 ;;
  esac
  shift
done

[ -n "$sub" ] || { usage >&2; exit 2; }
[ -n "$name" ] || die "--name=NAME is required"
[ -n "$zone" ] || die "--zone=ZONE is required"
where=(--zone="$zone")
[ -z "$project" ] || where+=(--project="$project")

# Every gcloud call goes through here: printed, then run (unless --dry-run).
gc() {
  echo "+ $(qall gcloud "$@")" >&2
  if [ "$dry_run" = 0 ]; then gcloud "$@"; fi
}

# Run a shell script on workers ("all" or a number).
on_workers() {
  gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker="$1" --command="$2"
}

default_version() {
  case "$type" in
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default TPU software version for --type=$type: give --version=VERSION" ;;
  esac
}

create() {
  [ -n "$type" ] || die "create: --type=TYPE is required (e.g. v4-16)"
  [ -n "$version" ] || version=$(default_version)
  local spot_flag=()
  [ "$spot" = 0 ] || spot_flag=(--spot)
  if [ "$queued" = 0 ]; then
    gc compute tpus tpu-vm create "$name" "${where[@]}" --accelerator-type="$type" --version="$version" \
      ${spot_flag[@]+"${spot_flag[@]}"}
    return
  fi
  gc compute tpus queued-resources create "$name" "${where[@]}" --node-id="$name" --accelerator-type="$type" \
    --runtime-version="$version" ${spot_flag[@]+"${spot_flag[@]}"}
  local state
  while :; do
    state=$(gc compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)')
    [ "$dry_run" = 0 ] || return 0
    case "$state" in
      ACTIVE) echo "tpu_vm.sh: queued resource $name is ACTIVE" >&2; return 0 ;;
      FAILED|SUSPENDED) die "queued resource $name is $state: delete it (delete --queued) and create again" ;;
      *) echo "tpu_vm.sh: queued resource $name is ${state:-not yet listed}; checking again in 60 s" >&2; sleep 60 ;;
    esac
  done
}

# The mount point as the worker's shell should read it: a relative path is under its home.
remote_mount() {
  # shellcheck disable=SC2016  # $HOME expands on the worker
  case "$mount" in
    /*) q "$mount" ;;
    *) printf '"$HOME"/%s' "$(q "$mount")" ;;
  esac
}

setup() {
  [ -n "$repo" ] || die "setup: --repo=URL is required (a git URL the workers can clone)"
  [ -z "$bucket" ] || [ -z "$nfs" ] || die "setup: give --bucket or --nfs, not both"
  local script mnt
  mnt=$(remote_mount)
  script="set -euo pipefail
cd \"\$HOME\"
[ -d monitor_jax/.git ] || git clone --quiet $(q "$repo") monitor_jax
cd monitor_jax
git fetch --quiet origin $(q "$ref")
git checkout --quiet --detach FETCH_HEAD
python3 -m pip install --user -e \".[tpu]\"
mnt=$mnt
mkdir -p \"\$mnt\""
  if [ -n "$bucket" ]; then
    script+="
if ! command -v gcsfuse >/dev/null; then
  key=/usr/share/keyrings/cloud.google.asc apt=https://packages.cloud.google.com/apt
  curl -fsSL \"\$apt/doc/apt-key.gpg\" | sudo tee \"\$key\" >/dev/null
  echo \"deb [signed-by=\$key] \$apt gcsfuse-\$(lsb_release -cs) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
fi
mountpoint -q \"\$mnt\" || gcsfuse --implicit-dirs --metadata-cache-ttl-secs=0 $(q "$bucket") \"\$mnt\""
  elif [ -n "$nfs" ]; then
    script+="
command -v mount.nfs >/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q nfs-common; }
mountpoint -q \"\$mnt\" || sudo mount -t nfs -o rw,hard $(q "$nfs") \"\$mnt\""
  else
    echo "tpu_vm.sh: no --bucket or --nfs: $mount is each worker's own directory, not shared" >&2
  fi
  on_workers all "$script"
}

logs() {
  # shellcheck disable=SC2016  # $HOME expands on the worker
  on_workers "$worker" 'tail -n 200 -F "$HOME/monitor_jax.log"'
}

run() {
  [ "${#cmd[@]}" -gt 0 ] || die "run: no command: give it after --"
  local line
  line="${cmd[*]}"
  on_workers all "set -euo pipefail
cd \"\$HOME/monitor_jax\"
export PATH=\"\$HOME/.local/bin:\$PATH\"
if [ -f \"\$HOME/monitor_jax.pid\" ] && kill -0 \"\$(cat \"\$HOME/monitor_jax.pid\")\" 2>/dev/null; then
  echo \"\$(hostname): a command is still running (launch/tpu_vm.sh stop)\" >&2; exit 1
fi
echo \"=== \$(date -u +%FT%TZ) \$(hostname): \"$(q "$line") >> \"\$HOME/monitor_jax.log\"
nohup setsid bash -c $(q "$line") >> \"\$HOME/monitor_jax.log\" 2>&1 < /dev/null &
echo \$! > \"\$HOME/monitor_jax.pid\""
  [ "$follow" = 0 ] || logs
}

stop() {
  # shellcheck disable=SC2016  # $HOME expands on the worker
  on_workers all 'if [ -f "$HOME/monitor_jax.pid" ]; then kill -TERM -- "-$(cat "$HOME/monitor_jax.pid")" || true; fi'
}

delete() {
  if [ "$queued" = 1 ]; then
    gc compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet
  else
    gc compute tpus tpu-vm delete "$name" "${where[@]}" --quiet
  fi
}

case "$sub" in
  create) create ;;
  setup) setup ;;
  run) run ;;
  logs) logs ;;
  stop) stop ;;
  delete) delete ;;
  up) create; setup; if [ "${#cmd[@]}" -gt 0 ]; then run; fi ;;
  *) die "unknown subcommand $sub (create, setup, run, logs, stop, delete, up; see --help)" ;;
esac
