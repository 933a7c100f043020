"""`alphafuse` command line. Train flags are generated from TrainConfig, so the two cannot drift apart."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import re
import shlex
import shutil
import sys
import time
import traceback
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import PRESETS, PROTOCOLS, TrainConfig, config_with_preset, read_config_file

if TYPE_CHECKING:
    from training.train import TrainResult

log = logging.getLogger("alphafuse")

DEMO_DIR = Path(".cache/ml-100k")


def _field_help() -> dict[str, str]:
    """The trailing comment of each TrainConfig field, used as its --help text."""
    source = inspect.getsource(TrainConfig)
    return dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, flags=re.M))


def _default_note(default: Any) -> str:
    """` (default: X)` as a user would type X; nothing where there is no value to show (the help text
    says what unset or empty means)."""
    if default is None or default == "":
        return ""
    if isinstance(default, bool):
        return f" (default: {'on' if default else 'off'})"
    return f" (default: {default})"


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    helps = _field_help()
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `X | None`: the flag takes an X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        default = f.default if f.default is not MISSING else None
        text = helps.get(f.name, "") + _default_note(default)
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        if hint is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif choices:
            parser.add_argument(flag, dest=f.name, choices=choices, default=None, help=text)
        else:
            kind: Callable[[str], Any] = str
            if hint is int:
                kind = int
            elif hint is float:
                kind = float
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset first, then config file values, then every flag given on the command line wins."""
    values: dict[str, Any] = read_config_file(Path(args.config)) if args.config else {}
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return config_with_preset(args.preset, values)


def self_command() -> str:
    """This CLI as the user can type it again: `alphafuse` where PATH finds this very script, else the
    path it was started by (`.venv/bin/alphafuse` after scripts/demo.sh, which puts nothing on PATH),
    else `python -m training.cli` with this interpreter."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "alphafuse":
        found = shutil.which("alphafuse")
        if found is not None and Path(found).resolve() == Path(argv0).resolve():
            return "alphafuse"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m training.cli"


def training_summary(result: TrainResult, cfg: TrainConfig, wall_seconds: float) -> list[str]:
    """The closing lines of `train` and `demo`: test metrics at 4 decimals, the model selection, the time."""
    from training.progress import format_seconds
    from training.train import SELECT_METRIC

    test, valid = result.metrics["test"], result.metrics["valid"]
    ks = sorted({int(key.split("@")[1]) for key in test if "@" in key})
    lines = [
        f"trained in {format_seconds(wall_seconds)}: best epoch {result.best_epoch} of {len(result.history)} "
        f"(validation {SELECT_METRIC} {valid[SELECT_METRIC]:.4f})",
        f"test ({int(test.get('cases', 0))} cases)" + "".join(f"{f'@{k}':>9}" for k in ks),
    ]
    for name in ("hr", "ndcg", "mrr"):
        lines.append(f"  {name:<14}" + "".join(f"{test[f'{name}@{k}']:>9.4f}" for k in ks))
    lines.append(f"artifact: {cfg.out} (all metrics in metrics.json, per epoch in history.json)")
    return lines


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import run_training

    cfg = config_from_args(args)
    started = time.perf_counter()
    result = run_training(cfg)
    lines = training_summary(result, cfg, time.perf_counter() - started)
    lines.append(f"serve it: {self_command()} serve --artifact {shlex.quote(cfg.out)}")
    print("\n".join(lines))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_artifact

    metrics = evaluate_artifact(
        Path(args.artifact), data=args.data, protocol=args.protocol, split=args.split, seed=args.seed,
        mask_history=args.mask_history,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


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
        f"  API docs: {base}/docs",
        "to serve it again later:",
        later,
    ]), flush=True)
    return _serve(Path(cfg.out), args.host, args.port, workers=1)


def _serve(artifact: Path | None, host: str, port: int, workers: int, **overrides: Any) -> int:
    from service.main import serve

    return serve(artifact, host=host, port=port, workers=workers, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {k: v for k, v in (("store", args.store), ("index", args.index)) if v is not None}
    if args.allow_open_writes:
        overrides["allow_open_writes"] = True
    if args.reset_store:
        overrides["reset_store"] = True
    artifact = Path(args.artifact) if args.artifact is not None else None
    return _serve(artifact, args.host, args.port, args.workers, **overrides)


def cmd_loadtest(args: argparse.Namespace) -> int:
    from service.loadtest import cmd_loadtest as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alphafuse", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model and write an artifact + metrics.json")
    train.add_argument("--config", help="YAML/TOML/JSON file of flags (command-line flags override it)")
    train.add_argument(
        "--preset", choices=list(PRESETS), default="default",
        help="named recipe under the config file and flags: default (measured, README), or paper "
        "(AlphaFuse's published SASRec settings: InfoNCE, 64 negatives, cosine, 150 epochs, patience 50; "
        "DreamRec's defaults already are its paper settings)",
    )
    add_train_flags(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate an artifact on a dataset's split, print metrics JSON")
    ev.add_argument("--artifact", required=True, help="artifact directory written by train")
    ev.add_argument("--data", default=None, help="dataset directory (default: the one it was trained on)")
    ev.add_argument("--protocol", default=None, choices=PROTOCOLS, help="evaluation protocol (default: as trained)")
    ev.add_argument("--split", default=None, help="predefined split directory (default: as trained)")
    ev.add_argument("--seed", type=int, default=None, help="split seed (default: as trained)")
    ev.add_argument(
        "--mask-history", action=argparse.BooleanOptionalAction, default=None,
        help="history items do not compete (default: as trained)",
    )
    ev.set_defaults(func=cmd_evaluate)

    demo = sub.add_parser("demo", help="the main job: MovieLens-100k -> embed -> train briefly -> serve")
    demo.add_argument("--data", default=None, help="local MovieLens-100k folder (default: download it)")
    demo.add_argument("--out", default="runs/demo", help="artifact directory")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--no-serve", action="store_true", help="stop after training")
    demo.set_defaults(func=cmd_demo)
    srv = sub.add_parser("serve", help="serve an artifact over HTTP (FastAPI + uvicorn)")
    srv.add_argument(
        "--artifact", default=None, help="artifact directory written by train (default: ALPHAFUSE_ARTIFACT)"
    )
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=1, help="worker processes sharing the cold-item store")
    srv.add_argument(
        "--store", type=Path, default=None,
        help="cold-item SQLite file (ALPHAFUSE_STORE; default: ARTIFACT.items.sqlite3 beside the artifact directory)",
    )
    srv.add_argument(
        "--index", choices=["auto", "flat", "hnsw"], default=None,
        help="FAISS index (default auto: flat, exact, below ALPHAFUSE_AUTO_HNSW_MIN_ITEMS trained items, hnsw above)",
    )
    srv.add_argument(
        "--allow-open-writes", action="store_true",
        help="serve on a non-loopback address without ALPHAFUSE_API_TOKEN (anyone may add and delete items)",
    )
    srv.add_argument(
        "--reset-store", action="store_true",
        help="start over with an empty store if it fails its startup checks (old files are kept, renamed)",
    )
    srv.set_defaults(func=cmd_serve)

    from service.loadtest import add_loadtest_args

    lt = sub.add_parser("loadtest", help="bounded async load test of a running service (loopback only)")
    add_loadtest_args(lt)
    lt.set_defaults(func=cmd_loadtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from training.logs import setup_logging

    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    from model.artifact import ArtifactError
    from training.data import DownloadError

    try:
        return int(args.func(args))
    except (ValueError, ArtifactError, DownloadError, FileNotFoundError) as e:
        # one readable line, no traceback (unless -v): these are the user's inputs, not our bugs
        if args.verbose:
            traceback.print_exc()
        from service.main import one_line

        print(f"alphafuse: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
