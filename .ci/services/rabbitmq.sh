#!/usr/bin/env bash
# RabbitMQ for the tests (the rabbitmq sink, its outage test): Debian's rabbitmq-server on 127.0.0.1:5672,
# guest/guest. Sourced by .ci/run: starts the broker unless it is up, waits until it accepts AMQP, and exports
# SLUICE_TEST_AMQP_URL. Idempotent and quick when the broker is already running.

# shellcheck source=/dev/null
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

if port_open 127.0.0.1 5672; then
  echo "rabbitmq: already up on 127.0.0.1:5672"
else
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "rabbitmq: installing rabbitmq-server (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2
  fi
  if rabbitmqctl -q ping >/dev/null 2>&1; then
    # The node runs but its app was stopped (rabbitmqctl stop_app): start the app, not a second node.
    rabbitmqctl -q start_app > /tmp/sluice-ci-rabbitmq.log 2>&1 || { cat /tmp/sluice-ci-rabbitmq.log >&2; false; }
  else
    # -detached forks the Erlang node and returns; the wrapper runs it as the rabbitmq user.
    rabbitmq-server -detached > /tmp/sluice-ci-rabbitmq.log 2>&1 || { cat /tmp/sluice-ci-rabbitmq.log >&2; false; }
  fi
  wait_port 127.0.0.1 5672 120 || { cat /tmp/sluice-ci-rabbitmq.log >&2; false; }
  # The listener opens before every plugin and vhost is ready; await_startup waits for the whole boot.
  rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || true
  echo "rabbitmq: started on 127.0.0.1:5672"
fi
export SLUICE_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/"
