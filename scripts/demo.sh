#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, train AlphaFuse + SASRec on MovieLens-100k, serve it.
#   bash scripts/demo.sh                # downloads MovieLens-100k (or uses ../shared/data/ml-100k when present)
#   bash scripts/demo.sh /path/to/ml-100k [extra `alphafuse demo` flags]
set -euo pipefail
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
exec .venv/bin/alphafuse demo "${data[@]}" "$@"
