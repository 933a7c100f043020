"""`alphafuse` command line. Train flags are generated from TrainConfig, so the two cannot drift apart."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from cli import demo, serve, store, train

log = logging.getLogger("alphafuse")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alphafuse", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_parsers(sub)  # train, evaluate
    demo.add_parser(sub)
    serve.add_parsers(sub)  # serve, loadtest
    store.add_parser(sub)  # store init
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
