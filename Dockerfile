# alphafuse recommender service: FastAPI + FAISS over a trained artifact directory, CPU only.
#
# Builds have no package index: fill wheelhouse/ first (torch 2.13.0+cpu, every runtime dependency and
# alphafuse's own wheel), then build with the host network:
#   scripts/make-wheelhouse.sh
#   DOCKER_BUILDKIT=0 docker build --network host -t alphafuse .
#
# The artifact (the directory `alphafuse train --out` writes) reaches /artifact in one of two ways:
#   1. mounted at run time (one image, any model); its files must be readable by the container's user
#      (uid 10001), i.e. world-readable:
#        docker run --network host -v "$PWD/runs/toys:/artifact:ro" -v alphafuse-data:/data alphafuse
#   2. baked in at build time; the path is inside the build context, and .dockerignore admits only
#      artifacts/ (runs/ is kept out of the context), so copy or train it there first:
#        DOCKER_BUILDKIT=0 docker build --network host --build-arg ARTIFACT=artifacts/toys -t alphafuse:toys .
#      A directory mounted at /artifact still wins over the baked copy.
# Cold items added through POST /items are kept in the /data volume, so they survive a restart.
# One uvicorn worker by default (each worker holds its own model and index); raise with e.g.
#   docker run -e WORKERS=2 ...   (PORT likewise; 8000 by default)

FROM python:3.11-slim AS deps
# Debian's python3 is marked externally managed, so the application lives in its own venv
RUN python3 -m venv /opt/venv
COPY wheelhouse/*.whl /wheelhouse/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index /wheelhouse/*.whl \
    && /opt/venv/bin/python -c "import torch; assert torch.version.cuda is None, torch.__version__"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/app app \
    && mkdir -p /data && chown app:app /data
# the dependencies' layer stays cached while only alphafuse's own code changes
COPY --from=deps /opt/venv /opt/venv
COPY wheelhouse/self/ /tmp/self/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/self alphafuse \
    && /opt/venv/bin/pip check && rm -rf /tmp/self

# Without --build-arg ARTIFACT the default names a file that is no artifact and nothing is baked
# (an empty default would make COPY take the whole build context).
ARG ARTIFACT=pyproject.toml
COPY ${ARTIFACT} /opt/baked-artifact/
RUN if [ -f /opt/baked-artifact/manifest.json ]; then mv /opt/baked-artifact /artifact; \
    else rm -rf /opt/baked-artifact && mkdir /artifact; fi \
    && chmod -R a+rX,go-w /artifact

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    ALPHAFUSE_ARTIFACT=/artifact \
    ALPHAFUSE_STORE=/data/items.sqlite3 \
    PORT=8000 \
    WORKERS=1

USER app
WORKDIR /home/app
VOLUME ["/data"]
EXPOSE 8000

# slim images have no curl: ask /healthz with the interpreter that is there anyway
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz'; sys.exit(urllib.request.urlopen(url, timeout=4).status != 200)"]

# PORT and WORKERS may be changed with -e (with --network host another port avoids clashes on the host)
CMD ["sh", "-c", "exec alphafuse serve --artifact \"$ALPHAFUSE_ARTIFACT\" --host 0.0.0.0 --port \"$PORT\" --workers \"$WORKERS\""]
