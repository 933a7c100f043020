"""`alphafuse demo`: MovieLens-100k -> embed -> train briefly (training) -> serve (service)."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from cli.common import self_command, training_summary
from cli.serve import serve_artifact
from training.config import TrainConfig

DEMO_DIR = Path(".cache/ml-100k")


def cmd_demo(args: argparse.Namespace) -> int:
    from service.main import check_listen
    from service.settings import ServiceSettings
    from training.data import download_movielens_100k
    from training.train import run_training

    if not args.no_serve:
        # a busy port (or open writes on a public address) fails now, not after the training run
        check_listen(ServiceSettings(artifact=Path(args.out)), args.host, args.port)
    started = time.perf_counter()
    data = Path(args.data) if args.data else None
    if data is None:
        data = DEMO_DIR if (DEMO_DIR / "u.data").is_file() else download_movielens_100k(DEMO_DIR.parent)
    cfg = TrainConfig(
        data=str(data), protocol="loo", out=args.out, epochs=args.epochs, patience=args.epochs,
        max_len=50, seed=0,
    )
    result = run_training(cfg)
    lines = training_summary(result, cfg, time.perf_counter() - started)
    cmd, out = self_command(), shlex.quote(cfg.out)
    later = f"  {cmd} serve --artifact {out}"
    if args.no_serve:
        print("\n".join([*lines, "serve it:", later]))
        return 0
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{host}:{args.port}"
    history = next((list(c.history[-3:]) for c in result.prepared.split.test if c.history), [])
    body = json.dumps({"history": history, "k": 5})
    print("\n".join([
        *lines,
        f"serving it now on {base} (Ctrl-C stops); in another shell:",
        f"  curl -s {base}/recommend -H 'content-type: application/json' -d {shlex.quote(body)}",
        f"  {cmd} loadtest --url {base} --artifact {out} --duration 10",
        f"  playground: {base}/ui   API docs: {base}/docs",
        "to serve it again later:",
        later,
    ]), flush=True)
    return serve_artifact(Path(cfg.out), args.host, args.port, workers=1)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="the main job: MovieLens-100k -> embed -> train briefly -> serve")
    demo.add_argument("--data", default=None, help="local MovieLens-100k folder (default: download it)")
    demo.add_argument("--out", default="runs/demo", help="artifact directory")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--no-serve", action="store_true", help="stop after training")
    demo.set_defaults(func=cmd_demo)
