#!/usr/bin/env bash
# Two replicas of one model over one PostgreSQL database, on this machine: a throwaway cluster (initdb +
# pg_ctl in a temp dir, loopback), `alphafuse store init`, then `alphafuse serve` on two ports.
#   bash scripts/replicas.sh runs/demo            # ports 8001 and 8002; Ctrl-C stops everything
#   PORTS="9001 9002" PG_PORT=55432 bash scripts/replicas.sh runs/demo
# As root (containers) the server runs as the `postgres` user: initdb and postgres refuse root.
set -euo pipefail
cd "$(dirname "$0")/.."
artifact=${1:?usage: scripts/replicas.sh ARTIFACT_DIR}
read -r -a ports <<< "${PORTS:-8001 8002}"
pg_port=${PG_PORT:-55432}
alphafuse=${ALPHAFUSE:-.venv/bin/alphafuse}
[[ -x $alphafuse ]] || alphafuse=alphafuse

bindir=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")
[[ -x $bindir/initdb ]] || { echo "replicas: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as=()
root=$(mktemp -d /tmp/alphafuse-replicas-XXXXXX)
if [[ $(id -u) == 0 ]]; then as=(runuser -u postgres --); chown postgres "$root"; fi
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  "${as[@]}" "$bindir/pg_ctl" -D "$root/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$root"
}
trap cleanup EXIT INT TERM

"${as[@]}" "$bindir/initdb" -D "$root/data" -U alphafuse --auth=trust -E UTF8 >/dev/null
"${as[@]}" "$bindir/pg_ctl" -D "$root/data" -l "$root/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $root" start >/dev/null
url="postgresql://alphafuse@127.0.0.1:$pg_port/postgres"
"$alphafuse" store init --store "$url"

export ALPHAFUSE_SYNC_INTERVAL_S=${ALPHAFUSE_SYNC_INTERVAL_S:-30}  # NOTIFY does the work; the timer is a backstop
for port in "${ports[@]}"; do
  "$alphafuse" serve --artifact "$artifact" --store "$url" --port "$port" &
  pids+=($!)
done
echo "replicas: http://127.0.0.1:${ports[0]} and http://127.0.0.1:${ports[1]} over $url (Ctrl-C stops all)" >&2
wait -n "${pids[@]}"
