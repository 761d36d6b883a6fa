#!/usr/bin/env bash
# S3 for the tests: MinIO, built from the Go module proxy with `go install` (a few minutes and ~150 MB, once)
# into .ci/.cache/s3 (gitignored), so a warm machine starts it in under a second. MinIO over the lighter npm
# s3rver because it behaves like S3 where the bucket sink's guarantees are decided: it checks SigV4 signatures
# (a wrong secret is refused, not only a wrong key id) and never keeps a partial object from a cut upload.
#
# Sourced by .ci/run: builds it if needed, starts the shared instance on 127.0.0.1:$SLUICE_S3_PORT (19000)
# unless one is up, and exports SLUICE_TEST_S3_ENDPOINT, SLUICE_TEST_S3_ACCESS_KEY_ID,
# SLUICE_TEST_S3_SECRET_ACCESS_KEY (plus SLUICE_TEST_S3_SERVER, this script, for the outage test).
#
# Executed as `bash .ci/services/s3.sh run PORT DATA_DIR`: runs a private instance in the foreground, bound to
# 127.0.0.1, keeping its objects in DATA_DIR (so a test can kill it and start it again). Credentials come from
# MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, by default the ones exported below.

_sluice_s3_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_sluice_s3_cache="$_sluice_s3_root/.ci/.cache/s3"
_sluice_s3_version="v0.0.0-20260212201848-7aac2a2c5b7c" # github.com/minio/minio, pinned: @latest moves
_sluice_s3_bin="$_sluice_s3_cache/minio-$_sluice_s3_version"
_sluice_s3_user="sluice-test"
_sluice_s3_password="sluice-test-secret"

_sluice_s3_install() {
  [ -x "$_sluice_s3_bin" ] && return 0
  echo "s3: building MinIO $_sluice_s3_version into $_sluice_s3_cache (once; a few minutes)" >&2
  mkdir -p "$_sluice_s3_cache/gobin"
  GOBIN="$_sluice_s3_cache/gobin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go install "github.com/minio/minio@$_sluice_s3_version" >&2
  mv -f "$_sluice_s3_cache/gobin/minio" "$_sluice_s3_bin"
}

_sluice_s3_exec() { # port data-dir; replaces the shell
  export MINIO_ROOT_USER="${MINIO_ROOT_USER:-$_sluice_s3_user}"
  export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-$_sluice_s3_password}"
  export MINIO_BROWSER=off MINIO_UPDATE=off
  exec "$_sluice_s3_bin" server "$2" --quiet --address "127.0.0.1:$1" --console-address 127.0.0.1:0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Executed: run a private instance in the foreground.
  set -euo pipefail
  if [ "${1:-}" != run ] || [ -z "${2:-}" ] || [ -z "${3:-}" ]; then
    echo "usage: $0 run PORT DATA_DIR" >&2
    exit 2
  fi
  _sluice_s3_install
  mkdir -p "$3"
  _sluice_s3_exec "$2" "$3"
fi

# Sourced: make sure the shared instance is up.
# shellcheck source=/dev/null
source "$_sluice_s3_root/.ci/services/lib.sh"
_sluice_s3_port="${SLUICE_S3_PORT:-19000}"
_sluice_s3_healthy() { # MinIO answers its liveness probe (not merely something on the port)
  curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$_sluice_s3_port/minio/health/live" 2> /dev/null
}
_sluice_s3_writable() { # MinIO can write: its cluster probe needs write quorum on its drive
  curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$_sluice_s3_port/minio/health/cluster" 2> /dev/null
}
_sluice_s3_wait_writable() { # up to 30 s: a fresh instance formats its drive first
  for _ in $(seq 1 300); do
    _sluice_s3_writable && return 0
    sleep 0.1
  done
  return 1
}
if port_open 127.0.0.1 "$_sluice_s3_port"; then
  if ! _sluice_s3_healthy; then
    echo "s3: 127.0.0.1:$_sluice_s3_port is taken by something that is not MinIO; set SLUICE_S3_PORT to a free port" >&2
    false
  fi
  if ! _sluice_s3_wait_writable; then
    # Up but refusing writes (its data directory was removed under it, or its drive is wedged): every bucket
    # test would fail. If it is the instance this script starts, start it again on an empty directory.
    _sluice_s3_pid="$(pgrep -f "/minio-[^ ]* server /tmp/sluice-ci-s3 .*--address 127\.0\.0\.1:$_sluice_s3_port( |\$)" || true)"
    if [ -z "$_sluice_s3_pid" ]; then
      echo "s3: MinIO on 127.0.0.1:$_sluice_s3_port refuses writes and was not started by this script; restart it or set SLUICE_S3_PORT" >&2
      false
    fi
    echo "s3: MinIO on 127.0.0.1:$_sluice_s3_port refuses writes; starting it again on an empty /tmp/sluice-ci-s3" >&2
    kill $_sluice_s3_pid
    for _ in $(seq 1 100); do port_open 127.0.0.1 "$_sluice_s3_port" || break; sleep 0.1; done
    rm -rf /tmp/sluice-ci-s3
    _sluice_s3_start=1
  else
    echo "s3: MinIO already up on 127.0.0.1:$_sluice_s3_port"
  fi
else
  _sluice_s3_start=1
fi
if [ -n "${_sluice_s3_start:-}" ]; then
  _sluice_s3_install
  mkdir -p /tmp/sluice-ci-s3
  (_sluice_s3_exec "$_sluice_s3_port" /tmp/sluice-ci-s3 > /tmp/sluice-ci-s3.log 2>&1 < /dev/null &)
  wait_port 127.0.0.1 "$_sluice_s3_port" 60 || { cat /tmp/sluice-ci-s3.log >&2; false; }
  _sluice_s3_wait_writable || { echo "s3: MinIO started but refuses writes" >&2; cat /tmp/sluice-ci-s3.log >&2; false; }
  echo "s3: started MinIO on 127.0.0.1:$_sluice_s3_port (log /tmp/sluice-ci-s3.log)"
fi
export SLUICE_TEST_S3_ENDPOINT="http://127.0.0.1:$_sluice_s3_port"
export SLUICE_TEST_S3_ACCESS_KEY_ID="$_sluice_s3_user"
export SLUICE_TEST_S3_SECRET_ACCESS_KEY="$_sluice_s3_password"
export SLUICE_TEST_S3_SERVER="$_sluice_s3_root/.ci/services/s3.sh"
unset -f _sluice_s3_install _sluice_s3_exec _sluice_s3_healthy _sluice_s3_writable _sluice_s3_wait_writable
unset _sluice_s3_pid _sluice_s3_start _sluice_s3_root _sluice_s3_cache _sluice_s3_version _sluice_s3_bin _sluice_s3_user _sluice_s3_password _sluice_s3_port
