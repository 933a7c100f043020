"""`alphafuse train` and `alphafuse evaluate`. Train flags are generated from TrainConfig, so the two cannot
drift apart; the work is training.train.run_training and training.evaluate.evaluate_artifact."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import shlex
import time
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from cli.common import self_command, training_summary
from training.config import PRESETS, PROTOCOLS, TrainConfig, config_with_preset, read_config_file


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


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import run_training

    cfg = config_from_args(args)
    started = time.perf_counter()
    result = run_training(cfg)
    if result.rank != 0:
        return 0  # under torchrun rank 0 reports and writes the artifact
    lines = training_summary(result, cfg, time.perf_counter() - started)
    lines.append(f"serve it: {self_command()} serve --artifact {shlex.quote(cfg.out)}")
    print("\n".join(lines))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_artifact

    metrics = evaluate_artifact(
        Path(args.artifact), data=args.data, protocol=args.protocol, split=args.split, seed=args.seed,
        mask_history=args.mask_history, device=args.device,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    ev.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="where the model scores (auto: cuda when torch sees a GPU)",
    )
    ev.set_defaults(func=cmd_evaluate)
