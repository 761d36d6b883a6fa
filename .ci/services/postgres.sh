#!/usr/bin/env bash
# PostgreSQL for the tests of the postgres store (core/store/postgres, cmd/sluice's multi-node tests): the
# machine's Debian cluster on 127.0.0.1:5432, user postgres without a password (trust on loopback), database
# test. Sourced by .ci/run: starts the cluster unless it is up (installing Debian's postgresql if missing),
# makes the database, and exports SLUICE_TEST_PG_DSN. Each test makes and drops its own schema.

# shellcheck source=/dev/null
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

if port_open 127.0.0.1 5432; then
  echo "postgres: already up on 127.0.0.1:5432"
else
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "postgres: installing postgresql (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
      { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    pg_version=$(ls /etc/postgresql | sort -V | tail -1)
    # A fresh cluster asks for passwords on TCP; the tests connect as postgres on loopback without one.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "/etc/postgresql/$pg_version/main/pg_hba.conf"
  fi
  pg_version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
  wait_port 127.0.0.1 5432 60
  echo "postgres: started cluster $pg_version/main on 127.0.0.1:5432"
fi
if ! runuser -u postgres -- psql -h 127.0.0.1 -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
  runuser -u postgres -- createdb -h 127.0.0.1 test
fi
export SLUICE_TEST_PG_DSN="postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
