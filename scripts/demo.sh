#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, train AlphaFuse + SASRec on MovieLens-100k, serve it.
#   bash scripts/demo.sh                # downloads MovieLens-100k (or uses ../shared/data/ml-100k when present)
#   bash scripts/demo.sh /path/to/ml-100k [extra `alphafuse demo` flags, e.g. --port 8001]
set -euo pipefail
started_in=$PWD
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/alphafuse ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e .
fi
export HF_HUB_OFFLINE=1

data=()
if [[ $# -gt 0 && $1 != -* ]]; then
  data=(--data "$1"); shift
elif [[ -d ../shared/data/ml-100k ]]; then
  data=(--data ../shared/data/ml-100k)
fi
echo "demo: the CLI is .venv/bin/alphafuse (nothing is put on PATH; 'source .venv/bin/activate' makes it plain 'alphafuse')" >&2
if [[ $PWD != "$started_in" ]]; then
  echo "demo: the commands printed below are relative to $PWD: cd there first" >&2
fi
# started by its relative path, the CLI prints its next commands as .venv/bin/alphafuse ...
exec .venv/bin/alphafuse demo "${data[@]}" "$@"
