"""CPU time of a process and its descendants, read from /proc (Linux), for cost-per-request numbers.

Wall-clock throughput on a shared machine says as much about the neighbours as about the server; the
CPU seconds the server's processes were charged (utime + stime, all threads) divided by the requests
they answered does not. `/proc/<pid>/stat` of a process already sums all of its threads; the
descendants are summed too, so a uvicorn supervisor with several worker processes counts as one server.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc times are in these units


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_s: float  # utime + stime of all threads, seconds


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds per process of one tree at one moment."""

    at: float  # time.monotonic()
    cpu_s: dict[int, float]  # pid -> utime + stime (s)

    @property
    def total_s(self) -> float:
        return sum(self.cpu_s.values())


def read_stat(pid: int, proc: Path = PROC) -> ProcStat:
    """Parse /proc/<pid>/stat. The command name (field 2) may hold spaces and parentheses, so the
    fields are counted from the last ')'; after it come state (3), ppid (4) ... utime (14), stime (15)."""
    raw = (proc / str(pid) / "stat").read_text()
    rest = raw[raw.rindex(")") + 2 :].split()
    ppid = int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    return ProcStat(pid=pid, ppid=ppid, cpu_s=(utime + stime) / CLOCK_TICKS)


def process_tree(root: int, proc: Path = PROC) -> list[int]:
    """`root` and every live descendant (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = read_stat(int(entry.name), proc)
        except (OSError, ValueError, IndexError):  # exited while we looked
            continue
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def sample(root: int, proc: Path = PROC) -> CpuSample:
    """CPU seconds of `root` and its descendants now; processes that exit mid-scan are left out."""
    cpu: dict[int, float] = {}
    for pid in process_tree(root, proc):
        try:
            cpu[pid] = read_stat(pid, proc).cpu_s
        except (OSError, ValueError, IndexError):
            continue
    if root not in cpu:
        raise ProcessLookupError(f"process {root} is not running")
    return CpuSample(at=time.monotonic(), cpu_s=cpu)


def cpu_between(before: CpuSample, after: CpuSample) -> float:
    """CPU seconds the tree used between two samples. A process born in between counts from zero; one
    that died in between is lost (its time is no longer readable), so keep worker restarts out of a row."""
    return sum(s - before.cpu_s.get(pid, 0.0) for pid, s in after.cpu_s.items())
