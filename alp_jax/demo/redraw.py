"""Re-drawing rendered probe-task clips that duplicate a pretraining-corpus clip (both demo task builders).

A builder plans its clips as dicts with at least "file" (relative to the output folder) and "attempt" (0 for
the first draw of the clip's slot, k for its k-th replacement), renders them, and hands them to
`replace_leaked` with a `redraw` (clip -> the next attempt of the same slot, same labels) and a `render` (renders
a list of clips to their files). Every clip is checked against the corpus with the leakage check
(alp_jax/data/leakage.py, check_files); each exact or near duplicate is drawn and rendered again, and only those
are checked again, until none is left.
"""
from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Callable

from alp_jax.data import leakage
from alp_jax.data import prepare as prepare_lib

MAX_ATTEMPTS = 30   # draws per clip slot before the build gives up on it


def corpus_key(corpus_dir) -> str | None:
  """What a build's settings record of the corpus it was checked against (None: not checked): the prepared
  corpus's fingerprint, or its absolute path when corpus.json has none. Raises FileNotFoundError when
  corpus_dir is not a prepared corpus."""
  if corpus_dir is None:
    return None
  return prepare_lib.load_corpus(corpus_dir).get("fingerprint") or str(Path(corpus_dir).absolute())


def replace_leaked(clips: list[dict], out_dir: Path, corpus: leakage.CorpusAudio, *,
                   redraw: Callable[[dict], dict], render: Callable[[list[dict]], None],
                   group: Callable[[str], str], group_name: str, name: str, what: str,
                   max_attempts: int = MAX_ATTEMPTS, quiet: bool = False) -> dict:
  """Checks every clip against the corpus and re-draws (redraw: next attempt of its slot) every exact or near
  duplicate until none is left. Changes `clips` in place; -> the check's record for the build file, with
  the replacements counted per group(file) under "replaced_by_<group_name>".

  name: the log prefix ("demo_tasks"); what: the clips in messages ("demo task clip"). Raises RuntimeError
  when a slot's `max_attempts` draws all duplicate a corpus clip, or a rendered clip cannot be read back.
  """
  t0 = time.monotonic()
  replaced: list[dict] = []
  pending = list(range(len(clips)))
  best: dict[str, float] = {}
  rounds = 0
  while pending:
    rounds += 1
    found = leakage.check_files([out_dir / clips[k]["file"] for k in pending], corpus, quiet=True)
    if found["unreadable"]:
      raise RuntimeError(f"{what}s could not be read back: {found['unreadable'][:3]}")
    leaked = []
    for k in pending:
      file = str(out_dir / clips[k]["file"])
      if file in found["exact"]:
        leaked.append((k, "exact", corpus.ids[found["exact"][file]], 1.0))
      elif file in found["near"]:
        index, score, _, _ = found["near"][file]
        leaked.append((k, "near", corpus.ids[index], score))
      elif file in found["best"]:  # (absent only when the corpus is empty)
        best[clips[k]["file"]] = found["best"][file][1]
    for k, kind, corpus_id, score in leaked:
      clip = clips[k]
      replaced.append({"file": clip["file"], "attempt": clip["attempt"], "kind": kind, "corpus_id": corpus_id,
                       "score": round(score, 4)})
      if clip["attempt"] + 1 >= max_attempts:
        raise RuntimeError(f"{what} {clip['file']}: {max_attempts} draws all duplicate a corpus clip "
                           f"(last: {kind} of {corpus_id}, score {score:.3f}); the corpus covers this slot's "
                           f"sounds, so use another --seed or leave out --corpus")
      clips[k] = redraw(clip)
    if not quiet:
      print(f"[{name}] leakage check round {rounds}: {len(pending)} clip(s) checked, {len(leaked)} exact or "
            f"near duplicate(s) of corpus clips drawn again", flush=True)
    pending = [k for k, *_ in leaked]
    if pending:
      render([clips[k] for k in pending])
  by_group: dict[str, int] = {}
  for r in replaced:
    by_group[group(r["file"])] = by_group.get(group(r["file"]), 0) + 1
  return {"corpus_clips": len(corpus.ids), "near_threshold": leakage.NEAR_THRESHOLD, "rounds": rounds,
          "replaced": len(replaced), f"replaced_by_{group_name}": by_group, "replacements": replaced,
          "exact": 0, "near": 0, "max_score": round(max(best.values()), 4) if best else None,
          "seconds": round(time.monotonic() - t0, 1)}


def render_all(items: list, work: Callable, *, workers: int, quiet: bool, label: str, every: int = 50) -> float:
  """Runs `work(item)` for every item on `workers` threads, printing progress (done, clips/s, ETA) every
  `every` items unless quiet, with `label` ("[demo_tasks] rendered ... clips"). -> items per second."""
  t0 = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = [pool.submit(work, item) for item in items]
    for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
      future.result()
      if not quiet and (done % every == 0 or done == len(items)):
        rate = done / (time.monotonic() - t0)
        print(f"{label.format(done=done, total=len(items))}, {rate:.1f} clips/s, "
              f"ETA {(len(items) - done) / rate:.0f}s", flush=True)
  return len(items) / max(time.monotonic() - t0, 1e-9)
