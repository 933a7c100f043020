"""Summarise a sampled profile of the server by layer of the serving stack.

Input: py-spy's `--format raw` output (collapsed stacks, one `frame;frame;...;frame COUNT` line per
distinct stack, root first, frames written `function (path:line)`). Each sample is charged to one
layer, decided by its frames:

1. "subtree" layers claim everything called below them. They are tried in the order of `RULES`, and
   the first one with a frame anywhere in the stack wins: pydantic under FastAPI's
   `serialize_response` is response encoding (serialising a response model validates it first), not
   request validation; `json.loads` under the store is store sync; a sync dependency that FastAPI
   sends to a worker thread is a thread hand-off, not validation;
2. otherwise the innermost frame that belongs to any layer decides (uvicorn's `run_asgi` is at the
   root of every request, so it only counts when nothing more specific is running).

C code has no Python frames of its own (orjson, sqlite3, pydantic-core, FAISS's kernels): it is charged
to the Python frame that called it, which is why the encoding of /recommend lives in its own module.

    python benchmarks/layers.py profile.txt [--md out.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Rule:
    layer: str
    path: str  # substring of the frame's file path ('/' separated)
    funcs: frozenset[str] = frozenset()  # function names (py-spy writes `Class.method`); empty: any
    subtree: bool = False  # the layer claims every frame called below this one

    def matches(self, file: str, func: str) -> bool:
        if self.path not in file:
            return False
        return not self.funcs or func in self.funcs or func.rpartition(".")[2] in self.funcs


HTTP = "HTTP parsing (uvicorn, h11, httptools)"
VALIDATION = "request parsing + validation (json, pydantic, FastAPI deps)"
FRAMEWORK = "ASGI framework (starlette, FastAPI routing)"
MIDDLEWARE = "our middleware + metrics (guard, metrics, prometheus)"
ROUTES = "our routes (service.app)"
HANDOFF = "batching + thread hand-offs (service.batching, executors, anyio to_thread)"
STORE = "store sync (service.store, sqlite3)"
RANKER = "ranker bookkeeping (service.ranker, numpy)"
TORCH = "torch (model forward)"
FAISS = "FAISS search"
ENCODING = "response encoding (orjson/json, serialisation)"
LOOP = "event loop (asyncio, uvloop)"
OTHER = "other"

LAYERS = (HTTP, VALIDATION, FRAMEWORK, MIDDLEWARE, ROUTES, HANDOFF, STORE, RANKER, TORCH, FAISS, ENCODING, LOOP)

RULES: tuple[Rule, ...] = (
    # subtree layers, in priority order: what runs under them is theirs
    Rule(TORCH, "/torch/", subtree=True),
    Rule(TORCH, "/model/", subtree=True),  # the backbone's own forward (calls straight into torch ops)
    Rule(FAISS, "/faiss/", subtree=True),
    Rule(STORE, "/service/store.py", subtree=True),
    Rule(STORE, "/sqlite3/", subtree=True),
    Rule(HANDOFF, "/starlette/concurrency.py", subtree=True),  # run_in_threadpool: sync deps and routes
    Rule(HANDOFF, "/anyio/to_thread.py", subtree=True),
    Rule(HANDOFF, "/anyio/_backends/_asyncio.py", frozenset({"WorkerThread.run", "WorkerThread._report_result"}),
         subtree=True),
    Rule(ENCODING, "/service/responses.py", subtree=True),
    Rule(ENCODING, "/fastapi/routing.py", frozenset({"serialize_response"}), subtree=True),
    Rule(ENCODING, "/fastapi/encoders.py", subtree=True),
    Rule(ENCODING, "/starlette/responses.py", frozenset({"render", "__init__", "init_headers"}), subtree=True),
    Rule(ENCODING, "/orjson", subtree=True),
    Rule(ENCODING, "/json/encoder.py", subtree=True),
    Rule(VALIDATION, "/pydantic/", subtree=True),
    Rule(VALIDATION, "/pydantic_core/", subtree=True),
    Rule(VALIDATION, "/fastapi/_compat", subtree=True),
    Rule(VALIDATION, "/fastapi/dependencies/", subtree=True),
    Rule(VALIDATION, "/fastapi/security/", subtree=True),
    Rule(VALIDATION, "/json/decoder.py", subtree=True),
    Rule(VALIDATION, "/service/schemas.py", subtree=True),
    # plain layers: the innermost of these decides
    Rule(HTTP, "/uvicorn/"),
    Rule(HTTP, "/h11/"),
    Rule(HTTP, "/httptools/"),
    Rule(HANDOFF, "/service/batching.py"),
    Rule(HANDOFF, "/concurrent/futures/"),
    Rule(HANDOFF, "/threading.py"),
    Rule(HANDOFF, "/queue.py"),
    Rule(RANKER, "/service/ranker.py"),
    Rule(RANKER, "/training/evaluate.py"),
    Rule(RANKER, "/numpy/"),
    Rule(MIDDLEWARE, "/service/guard.py"),
    Rule(MIDDLEWARE, "/service/metrics.py"),
    Rule(MIDDLEWARE, "/prometheus_client/"),
    Rule(ROUTES, "/service/app.py"),
    Rule(FRAMEWORK, "/starlette/"),
    Rule(FRAMEWORK, "/fastapi/"),
    Rule(FRAMEWORK, "/anyio/"),
    Rule(LOOP, "/asyncio/"),
    Rule(LOOP, "/uvloop/"),
)


@dataclass(frozen=True)
class Frame:
    func: str
    file: str


def parse_frame(text: str) -> Frame | None:
    """`func (path:line)` -> Frame; py-spy's `process ...` and `thread (0x...)` pseudo-frames -> None."""
    if text.startswith(("process ", "thread (")):
        return None
    m = _FRAME.match(text)
    if m is None:
        return None
    return Frame(m.group("func"), m.group("file").replace("\\", "/"))


def parse_raw(lines: Iterable[str]) -> list[tuple[list[Frame], int]]:
    """Collapsed stacks (root first) with their sample counts; blank and malformed lines are skipped."""
    out = []
    for line in lines:
        line = line.rstrip("\n")
        stack, sep, count = line.rpartition(" ")
        if not sep or not count.isdigit():
            continue
        frames = [f for f in (parse_frame(t) for t in stack.split(";")) if f is not None]
        out.append((frames, int(count)))
    return out


def layer_of(frames: Sequence[Frame], rules: Sequence[Rule] = RULES) -> tuple[str, Frame | None]:
    """(layer, the frame that decided it) for one stack, root first (module docstring)."""
    for rule in rules:
        if rule.subtree:
            hit = next((f for f in frames if rule.matches(f.file, f.func)), None)
            if hit is not None:
                return rule.layer, hit
    for frame in reversed(frames):  # innermost first
        plain = next((r for r in rules if not r.subtree and r.matches(frame.file, frame.func)), None)
        if plain is not None:
            return plain.layer, frame
    return OTHER, (frames[-1] if frames else None)


@dataclass
class LayerSummary:
    total: int = 0
    samples: Counter[str] = field(default_factory=Counter)
    top: dict[str, Counter[str]] = field(default_factory=dict)  # layer -> "func (file)" of the leaf -> samples

    def share(self, layer: str) -> float:
        return self.samples[layer] / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "total_samples": self.total,
            "layers": {
                layer: {"samples": n, "share": n / self.total if self.total else 0.0,
                        "top": self.top.get(layer, Counter()).most_common(3)}
                for layer, n in self.samples.most_common()
            },
        }  # fmt: skip


_LIB = re.compile(r"^.*/(?:site-packages|dist-packages|lib/python3\.\d+)/")


def _short(path: str) -> str:
    """`.../site-packages/uvicorn/server.py` -> `uvicorn/server.py`; our own files keep two parts."""
    short = _LIB.sub("", path)
    return short if short != path else "/".join(path.split("/")[-2:])


def summarise(stacks: Iterable[tuple[list[Frame], int]], rules: Sequence[Rule] = RULES) -> LayerSummary:
    s = LayerSummary()
    for frames, count in stacks:
        layer, _ = layer_of(frames, rules)
        s.total += count
        s.samples[layer] += count
        leaf = frames[-1] if frames else None
        name = f"{leaf.func} ({_short(leaf.file)})" if leaf else "?"
        s.top.setdefault(layer, Counter())[name] += count
    return s


def summarise_file(path: Path) -> LayerSummary:
    with Path(path).open(errors="replace") as f:
        return summarise(parse_raw(f))


def markdown(summary: LayerSummary, title: str = "") -> str:
    lines = [f"**{title}** ({summary.total} samples)" if title else f"{summary.total} samples", "",
             "| layer | samples | share | hottest leaf frames |", "|---|---:|---:|---|"]  # fmt: skip
    for layer, n in summary.samples.most_common():
        top = ", ".join(f"`{name}` {c}" for name, c in summary.top.get(layer, Counter()).most_common(3))
        lines.append(f"| {layer} | {n} | {100 * n / summary.total:.1f}% | {top} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("profile", type=Path, help="py-spy record --format raw output")
    p.add_argument("--md", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    text = markdown(summarise_file(args.profile), str(args.profile))
    print(text)
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
