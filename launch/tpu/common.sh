# shellcheck shell=bash
# Variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Shared option parsing for launch/tpu/*.sh. Sourced, not run.
# shellcheck source=launch/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

NAME="" PROJECT="${CLOUDSDK_CORE_PROJECT:-}" ZONE="" TYPE="" CAPACITY="spot" RUNTIME=""
REPO_URL="" REF="main" CONFIG="" OVERRIDES=() DOWNLOADS=() LOG_DIR="logs" POLL=60
CLUSTER="" NUM_SLICES=1 IMAGE=""

usage_common() {
  cat <<'USAGE'
Common options:
  --name NAME            TPU VM (and queued resource NAME-qr) name            (required)
  --project PROJECT      GCP project (default: $CLOUDSDK_CORE_PROJECT)
  --zone ZONE            e.g. us-east5-a                                    (required)
  --download HUB_ID      after installing, fetch hf://OWNER/NAME (a model) or hf://datasets/...
                         into every worker's hub cache (repeatable; HF_TOKEN on the workers)
  --dry-run              print the gcloud commands, run nothing
USAGE
}

parse_common() {
  # Consumes the options every TPU script knows; the rest go to REST.
  REST=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) NAME="$2"; shift 2 ;;
      --project) PROJECT="$2"; shift 2 ;;
      --zone) ZONE="$2"; shift 2 ;;
      --type) TYPE="$2"; shift 2 ;;
      --spot) CAPACITY="spot"; shift ;;
      --reserved) CAPACITY="reserved"; shift ;;
      --on-demand) CAPACITY="on-demand"; shift ;;
      --runtime-version) RUNTIME="$2"; shift 2 ;;
      --repo) REPO_URL="$2"; shift 2 ;;
      --ref) REF="$2"; shift 2 ;;
      --config) CONFIG="$2"; shift 2 ;;
      --download) DOWNLOADS+=("$2"); shift 2 ;;
      --log-dir) LOG_DIR="$2"; shift 2 ;;
      --poll) POLL="$2"; shift 2 ;;
      --cluster) CLUSTER="$2"; shift 2 ;;
      --num-slices) NUM_SLICES="$2"; shift 2 ;;
      --image) IMAGE="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --config.*) OVERRIDES+=("$1"); shift ;;
      -h | --help) usage; exit 0 ;;
      *) REST+=("$1"); shift ;;
    esac
  done
  [ ${#REST[@]} -eq 0 ] || die "unknown option(s): ${REST[*]} (see --help)"
  need "--name" "$NAME" "--name NAME"
  need "--project" "$PROJECT" "--project PROJECT or set CLOUDSDK_CORE_PROJECT"
  need "--zone" "$ZONE" "--zone ZONE"
}

gcloud_where() {
  printf '%s\n' --project "$PROJECT" --zone "$ZONE"
}

tpu_ssh_all() {
  # Runs one shell command on every worker of the slice at once.
  local where
  mapfile -t where < <(gcloud_where)
  run gcloud compute tpus tpu-vm ssh "$NAME" "${where[@]}" --worker=all --command "$1"
}

qr_state() {
  # The queued resource's state (ACTIVE, PROVISIONING, SUSPENDED, FAILED, ...), or empty if none.
  local where
  mapfile -t where < <(gcloud_where)
  if [ "$DRY_RUN" = 1 ]; then
    run gcloud compute tpus queued-resources describe "$NAME-qr" "${where[@]}" --format="value(state.state)"
    echo "(dry run: assuming no queued resource exists)" >&2
    return 0
  fi
  gcloud compute tpus queued-resources describe "$NAME-qr" "${where[@]}" \
    --format="value(state.state)" 2>/dev/null || true
}

tpu_create() {
  need "--type" "$TYPE" "--type v5p-64 (or v4-N, v5litepod-N, v6e-N)"
  local where capacity=()
  mapfile -t where < <(gcloud_where)
  [ -n "$RUNTIME" ] || RUNTIME="$(tpu_runtime_version "$TYPE")"
  case "$CAPACITY" in
    spot) capacity=(--spot) ;;
    reserved) capacity=(--reserved) ;;
    on-demand) capacity=() ;;
  esac
  run gcloud compute tpus queued-resources create "$NAME-qr" "${where[@]}" --node-id "$NAME" \
    --accelerator-type "$TYPE" --runtime-version "$RUNTIME" "${capacity[@]}"
}

tpu_wait_active() {
  local state
  while :; do
    state="$(qr_state)"
    [ "$DRY_RUN" = 1 ] && return 0
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED | "") return 1 ;;
      *) echo "queued resource $NAME-qr is $state; waiting ${POLL}s" >&2; sleep "$POLL" ;;
    esac
  done
}

tpu_setup() {
  need "--repo" "$REPO_URL" "--repo GIT_URL (the cft_jax repository the workers clone)"
  tpu_ssh_all "set -e; if [ ! -d cft_jax ]; then git clone $(quote "$REPO_URL") cft_jax; fi; \
cd cft_jax && git fetch -q origin && git checkout -q $(quote "$REF") && \
python3 -m venv .venv && .venv/bin/pip install -q -e \".[tpu,gcs]\""
  # Hub ids the run reads, fetched once per host now rather than by the first training step's
  # processes (a 7B checkpoint is ~15 GB): the trainer then finds them in the hub cache.
  local id
  for id in "${DOWNLOADS[@]}"; do
    tpu_ssh_all "cd cft_jax && .venv/bin/python -m cft_jax.convert download $(quote "$id")"
  done
}

train_command() {
  # The trainer's command line (python, then arguments), quoted for a remote shell. Every worker of
  # a slice is one process of the run: --distributed starts JAX's distributed runtime, which finds
  # the coordinator and this worker's id in the TPU VM metadata (GCE) or TPU_WORKER_* (GKE).
  local o cmd
  need "--config" "$CONFIG" "--config configs/FILE.py"
  cmd="$1 -m cft_jax.train --distributed --config $(quote "$CONFIG")"
  for o in "${OVERRIDES[@]}"; do
    cmd+=" $(quote "$o")"
  done
  printf '%s' "$cmd"
}

tpu_train() {
  local cmd env=""
  # XLA flags set in the launching shell reach every worker's libtpu (e.g. the collective-overlap
  # flags in docs/scaling.md); `--aot` on any machine compiles with the same variable.
  if [ -n "${LIBTPU_INIT_ARGS:-}" ]; then
    env="LIBTPU_INIT_ARGS=$(printf '%q' "$LIBTPU_INIT_ARGS") "
  fi
  cmd="cd cft_jax && ${env}$(train_command .venv/bin/python)"
  if [ "$DRY_RUN" != 1 ]; then
    mkdir -p "$LOG_DIR"
  fi
  echo "logs: $LOG_DIR/$NAME.log" >&2
  if [ "$DRY_RUN" = 1 ]; then
    tpu_ssh_all "$cmd"
  else
    tpu_ssh_all "$cmd" 2>&1 | tee -a "$LOG_DIR/$NAME.log"
    return "${PIPESTATUS[0]}"
  fi
}

tpu_delete() {
  local where
  mapfile -t where < <(gcloud_where)
  run gcloud compute tpus queued-resources delete "$NAME-qr" "${where[@]}" --force --quiet
}
