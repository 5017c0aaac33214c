"""Problem counting and printing shared by validate and prepare."""
from __future__ import annotations

import collections
import json
import sys
import time

from alp_jax.data import manifest as mf


class ProblemLog:
  """Counts problems by kind and keeps the first few examples of each.

  Every problem goes to `all` (a list), or, given `sink` (a text file), is written there as one JSON line
  and not kept: prepare's memory must not grow with the number of bad records.
  """

  def __init__(self, examples_per_kind: int = 3, sink=None):
    self.counts: collections.Counter = collections.Counter()
    self.examples: dict[str, list[mf.Problem]] = collections.defaultdict(list)
    self.all: list[mf.Problem] = []
    self._keep, self._sink = examples_per_kind, sink

  def add(self, problem: mf.Problem) -> None:
    self.counts[problem.kind] += 1
    if self._sink is not None:
      self._sink.write(json.dumps(problem.to_json(), ensure_ascii=False) + "\n")
    else:
      self.all.append(problem)
    if len(self.examples[problem.kind]) < self._keep:
      self.examples[problem.kind].append(problem)

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def lines(self) -> list[str]:
    order = list(mf.PROBLEM_KINDS) + [mf.DUPLICATE_AUDIO]
    kinds = sorted(self.counts, key=lambda k: order.index(k) if k in order else len(order))
    out = []
    for kind in kinds:
      out.append(f"  {kind:<20} {self.counts[kind]:>8}")
      for p in self.examples[kind]:
        out.append(f"      {p.where()}: {p.detail}")
    return out


class Progress:
  """A single updating line: done/total, rate, ETA. Silent when quiet or when stderr is not wanted."""

  def __init__(self, total: int, what: str, quiet: bool = False, every_seconds: float = 2.0):
    self.total, self.what, self.quiet, self.every = total, what, quiet, every_seconds
    self.start = self.last = time.monotonic()

  def update(self, done: int, force: bool = False) -> None:
    now = time.monotonic()
    if self.quiet or (not force and now - self.last < self.every):
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    total = f"/{self.total}" if self.total else ""
    eta = f" ETA {max(self.total - done, 0) / rate:.0f}s" if rate > 0 and self.total else ""
    print(f"[{self.what}] {done}{total} {rate:.1f}/s{eta}", file=sys.stderr, flush=True)

  def elapsed(self) -> float:
    return time.monotonic() - self.start
