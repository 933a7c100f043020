"""Progress through an epoch's optimiser steps: a bar on a terminal, plain log lines anywhere else.

A tqdm bar redraws one line with carriage returns, which a log file or CI capture keeps as one very long
line; there, a log line at every tenth of the epoch says the same thing readably.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

LOG_EVERY = 0.1  # share of an epoch between two log lines when stderr is not a terminal
MIN_STEPS_TO_LOG = 10  # shorter epochs get only their summary line


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def format_seconds(seconds: float) -> str:
    """`42.3 s`, `3 min 07 s`, `1 h 02 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class EpochProgress:
    """Call `step(loss)` after each optimiser step and `close()` at the end of the epoch."""

    def __init__(self, epoch: int, epochs: int, total_steps: int, *, terminal: bool | None = None) -> None:
        self.epoch, self.epochs, self.total = epoch, epochs, total_steps
        self.done, self.loss_sum = 0, 0.0
        self.started = time.perf_counter()
        self.bar: Any = None
        self.marks: list[int] = []
        if stderr_is_terminal() if terminal is None else terminal:
            from tqdm import tqdm

            # leave=False: the epoch's summary line replaces the finished bar
            self.bar = tqdm(total=total_steps, desc=f"epoch {epoch}/{epochs}", unit="step", leave=False,
                            dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        elif total_steps >= MIN_STEPS_TO_LOG:
            # the step counts at 10%, 20% ... 90% (100% is the summary line's)
            tenths = round(1 / LOG_EVERY)
            self.marks = sorted({math.ceil(total_steps * k / tenths) for k in range(1, tenths)})

    def step(self, loss: float) -> None:
        self.done += 1
        self.loss_sum += loss
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {self.loss_sum / self.done:.4f}", refresh=False)
            self.bar.update(1)
        elif self.marks and self.done == self.marks[0]:
            self.marks.pop(0)
            elapsed = time.perf_counter() - self.started
            left = elapsed / self.done * (self.total - self.done)
            log.info(
                "epoch %d/%d: %d%% (%d/%d steps), loss %.4f, %s, about %s left in this epoch",
                self.epoch, self.epochs, round(100 * self.done / self.total), self.done, self.total,
                self.loss_sum / self.done, format_seconds(elapsed), format_seconds(left),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
