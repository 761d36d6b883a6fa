# NATS with JetStream for the plugin tests (plugins/host, plugins/examples/nats, cmd/sluice plugin tests), and
# protoc for the generated-code freshness test of plugins/sdk/internal/proto. Sourced by .ci/run under `set -euo pipefail`.
# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v protoc >/dev/null 2>&1; then
  echo "installing protoc (protobuf-compiler) for plugins/sdk/internal/proto's freshness test"
  (apt-get install -y -qq protobuf-compiler >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq protobuf-compiler >/dev/null; })
fi

if ! port_open 127.0.0.1 4222; then
  if [ ! -x /usr/sbin/nats-server ] && ! command -v nats-server >/dev/null 2>&1; then
    apt-get install -y -qq nats-server >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq nats-server >/dev/null; }
  fi
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$nats_bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 127.0.0.1 4222 60
fi
export SLUICE_TEST_NATS_URL=nats://127.0.0.1:4222
