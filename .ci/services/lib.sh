# Helpers for the service scripts: sourced first (alphabetical order puts lib.sh before most names; scripts
# that need it source it themselves too).
wait_port() { # host port seconds
  local host=$1 port=$2 secs=${3:-60}
  for _ in $(seq 1 $((secs * 10))); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "service on $host:$port did not come up within ${secs}s" >&2
  return 1
}
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
