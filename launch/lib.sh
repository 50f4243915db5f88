# shellcheck shell=bash
# Shared by the launch scripts: dry-run aware command execution and argument checks.
# Sourced, not run. `run CMD...` prints the command (shell-quoted, one line, prefixed "+ ") and,
# unless DRY_RUN=1, executes it.

DRY_RUN="${DRY_RUN:-0}"
# Command lines go to fd 3 (the script's stdout) so that they show even inside $(...).
exec 3>&1

quote() {
  # One argument, quoted for a POSIX shell only when it needs it (readable dry-run output).
  case "$1" in
    "" | *[!A-Za-z0-9_./:=@,+%-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

run() {
  {
    printf '+'
    local a
    for a in "$@"; do
      printf ' '
      quote "$a"
    done
    printf '\n'
  } >&3
  if [ "$DRY_RUN" != 1 ]; then
    "$@"
  fi
}

die() {
  echo "error: $*" >&2
  exit 2
}

need() {
  # need NAME VALUE FLAG: fail with the flag to pass when a required option is empty.
  [ -n "$2" ] || die "missing $1: pass $3"
}

tpu_runtime_version() {
  # The TPU VM software image for an accelerator type (v4-8, v5litepod-16, v5p-64, v6e-8, ...).
  case "$1" in
    v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) die "unknown TPU type '$1': use v4-N, v5litepod-N, v5p-N or v6e-N" ;;
  esac
}
