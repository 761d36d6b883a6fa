#!/usr/bin/env bash
# Google's Pub/Sub emulator for the tests (the pubsub sink): Debian's google-cloud-cli-pubsub-emulator, which
# runs offline on the machine's Java, on 127.0.0.1:8085 for project sluice-test (any project id works).
# Sourced by .ci/run: starts it in the background unless it is up, waits for its port, and exports
# PUBSUB_EMULATOR_HOST. Idempotent and quick when the emulator is already running. Log: /tmp/sluice-ci-pubsub.log.

# shellcheck source=/dev/null
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

if port_open 127.0.0.1 8085; then
  echo "pubsub: emulator already up on 127.0.0.1:8085"
else
  if ! command -v gcloud >/dev/null 2>&1; then
    echo "pubsub: installing google-cloud-cli-pubsub-emulator (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q google-cloud-cli-pubsub-emulator >&2
  fi
  # setsid: the emulator outlives this shell and is not killed with .ci/run's process group.
  CLOUDSDK_CORE_DISABLE_PROMPTS=1 setsid nohup gcloud beta emulators pubsub start \
    --host-port=127.0.0.1:8085 --project=sluice-test > /tmp/sluice-ci-pubsub.log 2>&1 < /dev/null &
  wait_port 127.0.0.1 8085 120 || { cat /tmp/sluice-ci-pubsub.log >&2; false; }
  echo "pubsub: started the emulator on 127.0.0.1:8085 (log /tmp/sluice-ci-pubsub.log)"
fi
export PUBSUB_EMULATOR_HOST="127.0.0.1:8085"
