#!/usr/bin/env bash
# End-to-end check of the Docker image: wheelhouse -> image -> container serving an artifact.
#
#   scripts/docker-smoke.sh                        # trains a tiny artifact on a generated toy dataset
#   ARTIFACT=runs/toys scripts/docker-smoke.sh     # or serves an existing artifact directory
#   DATA=../shared/data/ml-100k scripts/docker-smoke.sh   # or trains 1 epoch on a real dataset folder
#
# Steps: build wheelhouse/ if it has no torch wheel (else only refresh alphafuse's own wheel); build the
# image; run it detached with --network host, the artifact mounted read-only at /artifact and an anonymous
# /data volume; wait for /readyz; POST /recommend and expect items; POST a cold item to /items (201) and
# GET it back; restart the container and GET it again (the /data volume keeps it). The container and its
# volume are always removed. Exits non-zero on the first failure.
# Needs a running Docker engine (bash ../shared/tools/docker-engine.sh) and .venv (for training).
# env: IMAGE (alphafuse:smoke), PORT (18000), READY_TIMEOUT seconds (240), PYTHON (.venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-alphafuse:smoke}
PORT=${PORT:-18000}
READY_TIMEOUT=${READY_TIMEOUT:-240}
PY=${PYTHON:-.venv/bin/python}
BASE=http://127.0.0.1:$PORT
name=alphafuse-smoke-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/alphafuse-smoke.XXXXXX")
log() { echo "docker-smoke: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
  local rc=$?
  if docker container inspect "$name" >/dev/null 2>&1; then
    ((rc == 0)) || { log "container logs (last 40 lines):"; docker logs --tail 40 "$name" 2>&1 | sed 's/^/  | /' >&2; }
    docker rm -f -v "$name" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

docker info >/dev/null 2>&1 || fail "no Docker engine; run: bash ../shared/tools/docker-engine.sh"
if "$PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $PORT)) != 0)"; then
  fail "port $PORT is already in use; set PORT=..."
fi

# 1. wheelhouse
if ls wheelhouse/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  scripts/make-wheelhouse.sh --self
else
  scripts/make-wheelhouse.sh
fi

# 2. image
log "building $IMAGE"
t0=$SECONDS
DOCKER_BUILDKIT=0 docker build --network host -t "$IMAGE" . >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; fail "docker build failed"; }
log "image built in $((SECONDS - t0)) s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# 3. artifact
if [[ -n ${ARTIFACT:-} ]]; then
  artifact=$(cd "$ARTIFACT" && pwd)
  [[ -f $artifact/manifest.json ]] || fail "$artifact has no manifest.json: not an artifact"
else
  artifact=$work/artifact
  if [[ -n ${DATA:-} ]]; then
    data=$DATA
    extra=(--protocol loo --epochs 1 --patience 1 --hidden-dim 32 --d-n 16)
  else
    data=$work/data
    "$PY" -c "import sys; from pathlib import Path; from tests.conftest import write_tiny_dataset; write_tiny_dataset(Path(sys.argv[1]))" "$data"
    extra=(--protocol loo --epochs 2 --patience 2 --hidden-dim 16 --d-n 8 --max-len 8 --batch-size 16 --negatives 8)
  fi
  log "training a tiny artifact on $data"
  "$PY" -m cli train --data "$data" --out "$artifact" --cache-dir "$work/cache" "${extra[@]}" \
    >"$work/train.log" 2>&1 || { tail -20 "$work/train.log" >&2; fail "training failed"; }
fi
# the container runs as an unprivileged user (uid 10001): it must be able to read every file
if [[ -n $(find "$artifact" ! -perm -o+r -print -quit) ]]; then
  log "note: $artifact has files others cannot read (e.g. written 0600); serving a readable copy"
  cp -r "$artifact" "$work/artifact-readable"
  artifact=$work/artifact-readable
  chmod -R a+rX "$artifact"
fi

# 4. container (PORT tells the image's CMD and HEALTHCHECK which port); until the CLI has `serve`, fall
# back to the service's own entry point
cmd=()
if ! docker run --rm --network host "$IMAGE" alphafuse serve --help >/dev/null 2>&1; then
  log "note: this image's CLI has no 'serve' command yet; running python -m service.main instead"
  cmd=(python -m service.main /artifact --host 0.0.0.0 --port "$PORT")
fi
# the image listens on 0.0.0.0, so it refuses to start with open writes: give it a token
TOKEN=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
docker run -d --name "$name" --network host -e PORT="$PORT" -e ALPHAFUSE_API_TOKEN="$TOKEN" \
  -v "$artifact:/artifact:ro" "$IMAGE" "${cmd[@]}" \
  >/dev/null

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT)) t0=$SECONDS
  until "$PY" - "$BASE/readyz" <<'EOF' 2>/dev/null
import sys, httpx
sys.exit(httpx.get(sys.argv[1], timeout=2, trust_env=False).status_code != 200)
EOF
  do
    [[ $(docker inspect -f '{{.State.Running}}' "$name") == true ]] || fail "container exited before it was ready"
    ((SECONDS < deadline)) || fail "not ready after ${READY_TIMEOUT}s"
    sleep 1
  done
  echo $((SECONDS - t0))
}
ready_s=$(wait_ready)
log "ready after ${ready_s}s"

# 5. the API, checked from the host with httpx (the same client the service's users have)
"$PY" - "$BASE" "$artifact" "$work/item_id" "$TOKEN" <<'EOF' || fail "API checks failed"
import json, sys, uuid
from pathlib import Path
import httpx

base, artifact, id_file, token = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
c = httpx.Client(base_url=base, timeout=30, trust_env=False, headers={"authorization": f"Bearer {token}"})
anon = httpx.post(f"{base}/items", json={"items": [{"item_id": "anon", "title": "t"}]}, timeout=30, trust_env=False)
if anon.status_code != 401:
    sys.exit(f"a write without the token: HTTP {anon.status_code} {anon.text[:300]}, expected 401")
ids = json.loads((artifact / "item_ids.json").read_text())
ids = ids if isinstance(ids, list) else list(ids)
history = [str(i) for i in ids[:3]]

def check(cond, what, r):
    if not cond:
        sys.exit(f"{what}: HTTP {r.status_code} {r.text[:300]}")

r = c.post("/recommend", json={"history": history, "k": 5})
check(r.status_code == 200 and len(r.json()["items"]) == 5, "POST /recommend", r)
top = r.json()["items"][0]
item_id = f"smoke-{uuid.uuid4().hex[:8]}"
item = {"item_id": item_id, "title": "Wooden Rainbow Stacking Puzzle for Toddlers", "categories": ["Toys & Games"]}
r = c.post("/items", json={"items": [item], "upsert": False})
check(r.status_code == 201, "POST /items", r)
r = c.get(f"/items/{item_id}")
check(r.status_code == 200 and r.json().get("item_id") == item_id, "GET /items/{id}", r)
r = c.get("/ui/")  # the playground's files are package data: the wheel must carry them
check(r.status_code == 200 and "AlphaFuse playground" in r.text, "GET /ui/", r)
r = c.get("/docs")
check(r.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in r.text, "GET /docs", r)
r = c.post("/recommend", json={"history": [item_id], "k": 5})
check(r.status_code == 200 and r.json()["items"], "POST /recommend from the cold item", r)
r = c.get("/metrics")
check(r.status_code == 200, "GET /metrics", r)
id_file.write_text(item_id)
print(f"docker-smoke: /recommend top item {top['item_id']} ({top['score']:.3f}); cold item {item_id} added", file=sys.stderr)
EOF

# 6. the image's HEALTHCHECK (every 10 s) reports healthy
for _ in $(seq 1 30); do
  health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$name")
  [[ $health == starting ]] || break
  sleep 1
done
[[ $health == healthy ]] || fail "HEALTHCHECK status is '$health', expected healthy"

# 7. durability: the cold item is still there after a restart (same /data volume)
docker restart "$name" >/dev/null
ready2_s=$(wait_ready)
item_id=$(cat "$work/item_id")
"$PY" - "$BASE/items/$item_id" <<'EOF' || fail "cold item lost across a restart"
import sys, httpx
r = httpx.get(sys.argv[1], timeout=10, trust_env=False)
sys.exit(0 if r.status_code == 200 else f"GET after restart: HTTP {r.status_code} {r.text[:200]}")
EOF
echo "docker-smoke: PASS image=$IMAGE artifact=$artifact ready=${ready_s}s restart=${ready2_s}s health=$health"
echo "docker-smoke: PASS /readyz, /recommend, POST /items 201, GET /items/{id}, /metrics, HEALTHCHECK healthy, item kept across restart"
