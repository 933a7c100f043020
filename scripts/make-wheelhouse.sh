#!/usr/bin/env bash
# Fill wheelhouse/ (gitignored) with every wheel the Docker image installs: the runtime dependencies of
# pyproject.toml's [project.dependencies] in wheelhouse/, alphafuse's own wheel in wheelhouse/self/ (built
# with the setuptools that [build-system] requires, fetched into wheelhouse/build-requires/). Docker builds
# here have no package index, so the Dockerfile installs with `pip install --no-index` from these folders.
#
# torch must be the CPU build (2.13.0+cpu, about 190 MB, no nvidia-* packages). PyPI's plain
# `torch==2.13.0` for Linux is the CUDA build that pulls ~3 GB of nvidia-* wheels, so torch is fetched
# first on its own with --no-deps from the +cpu pin (pip's configured find-links, or TORCH_INDEX_URL, e.g.
# https://download.pytorch.org/whl/cpu where that is reachable), then everything else is resolved with
# torch's own requirements but with that local wheel satisfying the torch pin. The script fails if a
# CUDA torch or any nvidia-* wheel ends up in the wheelhouse.
#
# Usage: scripts/make-wheelhouse.sh [--self] [WHEELHOUSE_DIR]   env: PYTHON (default .venv/bin/python)
#   --self   only rebuild alphafuse's own wheel (the dependencies are already there)
set -euo pipefail
cd "$(dirname "$0")/.."

self_only=0
if [[ ${1:-} == --self ]]; then self_only=1; shift; fi
out=${1:-wheelhouse}
py=${PYTHON:-}
if [[ -z $py ]]; then
  if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
fi
torch_pin="torch==2.13.0+cpu"
log() { echo "make-wheelhouse: $*" >&2; }
# pip's configured extra indexes here list projects whose folders are absent; drop that noise only
pip_() { "$py" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# the image's interpreter is Debian bookworm's CPython 3.11 on x86_64 glibc 2.36
target=(--python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_36_x86_64
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform linux_x86_64 --only-binary=:all:)

# alphafuse's own wheel goes to self/ so that the image's dependency layer (top-level wheels) stays cached
# when only the project's code changes. It is built in pip's isolated build environment from the build
# requirements of pyproject.toml ([build-system] requires), fetched into build-requires/ beside it, never
# against whatever setuptools the host happens to have (an old one rejects the PEP 639 `license = "MIT"`).
# build-requires/ is not copied into the image (the Dockerfile takes wheelhouse/*.whl and self/ only).
build_self() {
  log "alphafuse wheel (from the working tree) -> $out/self/"
  local had_build=0 blog
  [[ -d build ]] && had_build=1
  mapfile -t build_reqs < <("$py" - <<'EOF'
import tomllib
for req in tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]:
    print(req)
EOF
)
  rm -rf "$out/build-requires" && mkdir -p "$out/build-requires"
  log "build requirements: ${build_reqs[*]} -> $out/build-requires/"
  pip_ download --quiet --only-binary=:all: -d "$out/build-requires" "${build_reqs[@]}"
  rm -rf "$out/self" && mkdir -p "$out/self"
  blog=$(mktemp)
  # --no-index + --find-links: the isolated build environment takes setuptools from the wheels just fetched
  pip_ wheel --no-deps --no-index --find-links "$out/build-requires" -w "$out/self" . >"$blog" 2>&1 \
    || { cat "$blog" >&2; exit 1; }
  rm -f "$blog"
  ((had_build)) || rm -rf build  # setuptools' scratch folder, not ours to leave behind
}

mkdir -p "$out"
if ((self_only)); then build_self; exit 0; fi

log "torch (CPU build): $torch_pin"
torch_index=()
[[ -n ${TORCH_INDEX_URL:-} ]] && torch_index=(--extra-index-url "$TORCH_INDEX_URL")
pip_ download --quiet --no-deps "${target[@]}" "${torch_index[@]}" -d "$out" "$torch_pin"
torch_whl=$(ls "$out"/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1)
[[ -n $torch_whl ]] || { log "no torch 2.13.0+cpu wheel was downloaded"; exit 1; }

build_self

# Runtime dependencies from pyproject.toml, with torch pinned to the wheel already here so that the
# resolver never considers the CUDA build; torch's own dependencies (sympy, networkx ...) come along.
mapfile -t deps < <("$py" - <<'EOF'
import tomllib
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    print(dep)
EOF
)
reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT
for dep in "${deps[@]}"; do
  [[ $dep == torch* ]] && continue
  echo "$dep" >>"$reqs"
done
echo "torch @ file://$(cd "$(dirname "$torch_whl")" && pwd)/$(basename "$torch_whl")" >>"$reqs"
log "dependencies: ${#deps[@]} direct (torch from $torch_whl)"
pip_ download --quiet "${target[@]}" -d "$out" -r "$reqs"

if ls "$out" | grep -Eiq '^nvidia|^triton|^torch-2\.13\.0-|^torch-2\.13\.0%2B(cu|rocm)'; then
  log "CUDA packages found in $out:"; ls "$out" | grep -Ei '^nvidia|^triton|^torch-' >&2
  exit 1
fi
n=$(ls "$out"/*.whl "$out"/self/*.whl | wc -l)
log "ok: $n wheels, $(du -sh "$out" | cut -f1) in $out ($(basename "$torch_whl"))"
