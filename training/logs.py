"""The one logging setup of the command line and the service processes."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# faiss's loader logs at INFO every failed attempt to import an optimised build (AVX512, then AVX2)
# before it loads the generic one; on every start those lines read like errors although nothing is wrong.
QUIET_LOGGERS: dict[str, int] = {"faiss.loader": logging.WARNING}


def setup_logging(level: int = logging.INFO) -> None:
    """Root handler with our format at `level`; the loggers in QUIET_LOGGERS are held at their level
    unless `level` is DEBUG (then everything shows)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else quiet)
