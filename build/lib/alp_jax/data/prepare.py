"""Manifests -> training shards: decode, downmix, resample to 16 kHz, validate, deduplicate, write ArrayRecord.

  python -m alp_jax.data.prepare --manifest FILE [--manifest FILE ...] --out DIR [--workers N] [--overwrite]

Writes into DIR:
  shards/<source>/<source>-NNNNN.array_record   one record per clip (format: alp_jax/data/records.py)
  index/<source>.npz                           per clip: subset_key, num_captions, num_samples (pipeline index)
  captions.txt                                 every kept caption, one per line (tokenizer training, leakage)
  labels.json                                  per label task: each label and its clip count (class order)
  bad_records.jsonl                            every skipped record: manifest, line, id, kind, detail
  corpus.json                                  per-source statistics (clips, captions, hours), written LAST

corpus.json is the completeness marker: a crashed run leaves none, and the next run cleans up and starts over.
Running again with the same manifests reuses the finished dataset; different manifests are refused unless
--overwrite. Bad records and exact-duplicate audio (sha1 of the 16 kHz int16 samples, within and across sources;
the first occurrence in manifest order is kept) are skipped and counted, never fatal.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath

from alp_jax.audio.io import TARGET_SAMPLE_RATE
from alp_jax.data import ingest as ingest_lib
from alp_jax.data import manifest as mf
from alp_jax.data import records
from alp_jax.data import report
from alp_jax.data import subsets

FORMAT_VERSION = 1
CORPUS_FILE = "corpus.json"
LABELS_FILE = "labels.json"
_OWNED = ("shards", "index", "captions.txt", "bad_records.jsonl", LABELS_FILE, ".partial")


class PrepareError(Exception):
  """The output folder cannot be used as asked (message says what to do)."""


def _fingerprint(manifests: list[str]) -> str:
  h = hashlib.sha1()
  for path in manifests:
    h.update(os.path.abspath(path).encode())
    with open(path, "rb") as f:
      h.update(hashlib.sha1(f.read()).digest())
  return h.hexdigest()


def _safe_name(source: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]", "_", source)


class _SourceWriter:
  """Shards of one source, rolled over at `shard_bytes`."""

  def __init__(self, root: Path, source: str, shard_bytes: int):
    self.dir = root / "shards" / _safe_name(source)
    self.dir.mkdir(parents=True, exist_ok=True)
    self.name, self.shard_bytes = _safe_name(source), shard_bytes
    self.paths: list[str] = []
    self.writer, self.bytes = None, 0
    self.keys, self.num_captions, self.num_samples = [], [], []

  def write(self, ingested: ingest_lib.Ingested) -> None:
    if self.writer is None or self.bytes >= self.shard_bytes:
      self._roll()
    r = ingested.record
    meta = {"id": r.id, "captions": r.captions, "source": r.source, "labels": r.labels, "split": r.split,
            "sample_rate": TARGET_SAMPLE_RATE}
    data = records.encode_example(meta, ingested.audio)
    self.writer.write(data)
    self.bytes += len(data)
    self.keys.append(subsets.subset_key(r.id))
    self.num_captions.append(len(r.captions))
    self.num_samples.append(len(ingested.audio))

  def _roll(self) -> None:
    if self.writer is not None:
      self.writer.close()
    path = self.dir / f"{self.name}-{len(self.paths):05d}.array_record"
    self.writer = ArrayRecordWriter(str(path), "group_size:1")
    self.paths.append(str(path))
    self.bytes = 0

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
      self.writer = None


def _check_output(out: Path, fingerprint: str, overwrite: bool, quiet: bool) -> dict | None:
  """Returns the existing corpus.json to reuse, or None after making `out` ready for a fresh write."""
  marker = out / CORPUS_FILE
  if marker.exists():
    existing = json.loads(marker.read_text())
    if existing.get("fingerprint") == fingerprint and not overwrite:
      if not quiet:
        print(f"[prepare] {out} already holds this corpus (same manifests): reusing it.")
      return existing
    if not overwrite:
      raise PrepareError(f"{out} already holds a prepared corpus made from other manifests "
                         f"({', '.join(existing.get('manifests', []))[:300]}). Use another --out, or --overwrite.")
    marker.unlink()
  leftovers = [name for name in _OWNED if (out / name).exists()]
  if leftovers and not quiet:
    print(f"[prepare] {out} has an unfinished earlier run ({', '.join(leftovers)}); removing it and starting over.")
  for name in leftovers:
    p = out / name
    shutil.rmtree(p) if p.is_dir() else p.unlink()
  return None


def _ingest(record: mf.Record):
  return ingest_lib.ingest(record)


def prepare(manifests, out_dir, *, workers: int = 1, quiet: bool = False, overwrite: bool = False,
            shard_megabytes: float = 256.0) -> dict:
  """Prepares a corpus; returns the corpus.json content (plus 'reused': bool)."""
  start = time.monotonic()
  manifests = mf.resolve_manifest_paths(manifests)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  fingerprint = _fingerprint(manifests)
  existing = _check_output(out, fingerprint, overwrite, quiet)
  if existing is not None:
    return {**existing, "reused": True}

  partial = out / ".partial"
  partial.mkdir()
  problems = report.ProblemLog()
  good: list[mf.Record] = []
  for item in mf.read_manifests(manifests):
    (problems.add(item) if isinstance(item, mf.Problem) else good.append(item))
  input_records = len(good) + problems.total

  writers: dict[str, _SourceWriter] = {}
  seen_hash: dict[str, tuple[str, str]] = {}
  dup_within = dup_across = 0
  label_counts: dict[str, dict[str, int]] = {}
  seconds_in = 0.0
  progress = report.Progress(len(good), "prepare", quiet)
  pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
  results = pool.imap(_ingest, good, chunksize=4) if pool else map(_ingest, good)
  try:
    with open(partial / "captions.txt", "w", encoding="utf-8") as captions_file:
      for i, result in enumerate(results, 1):
        progress.update(i)
        if isinstance(result, mf.Problem):
          problems.add(result)
          continue
        r = result.record
        seconds_in += result.seconds
        if result.audio_hash in seen_hash:
          first_source, first_id = seen_hash[result.audio_hash]
          if first_source == r.source:
            dup_within += 1
          else:
            dup_across += 1
          problems.add(mf.Problem(mf.DUPLICATE_AUDIO, f"same audio as id={first_id} (source {first_source})",
                                  r.manifest, r.line, r.id))
          continue
        seen_hash[result.audio_hash] = (r.source, r.id)
        if r.source not in writers:
          writers[r.source] = _SourceWriter(partial, r.source, int(shard_megabytes * 2**20))
        writers[r.source].write(result)
        for task, value in r.labels.items():
          for label in (value if isinstance(value, list) else [value]):
            label_counts.setdefault(task, {}).setdefault(str(label), 0)
            label_counts[task][str(label)] += 1
        for caption in r.captions:
          captions_file.write(caption.replace("\n", " ") + "\n")
  finally:
    if pool:
      pool.terminate()
      pool.join()
    for w in writers.values():
      w.close()
  progress.update(len(good), force=True)

  (partial / "index").mkdir()
  sources = {}
  for source, w in sorted(writers.items()):
    np.savez(partial / "index" / f"{w.name}.npz", subset_key=np.asarray(w.keys, np.float64),
             num_captions=np.asarray(w.num_captions, np.int32), num_samples=np.asarray(w.num_samples, np.int64))
    sources[source] = {
        "clips": len(w.keys), "captions": int(sum(w.num_captions)),
        "hours": float(sum(w.num_samples)) / TARGET_SAMPLE_RATE / 3600,
        "shards": [os.path.relpath(p, partial) for p in w.paths],
        "index": f"index/{w.name}.npz"}
  with open(partial / "bad_records.jsonl", "w", encoding="utf-8") as f:
    for p in problems.all:
      f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")

  # Label vocabularies (task -> label -> clips), sorted: the class order of supervised objectives.
  (partial / LABELS_FILE).write_text(json.dumps(
      {task: dict(sorted(counts.items())) for task, counts in sorted(label_counts.items())}, indent=1))
  # Move everything into place; corpus.json last, atomically.
  for name in ("shards", "index", "captions.txt", "bad_records.jsonl", LABELS_FILE):
    src = partial / name
    if src.exists():
      os.replace(src, out / name)
  shutil.rmtree(partial)
  corpus = {
      "format_version": FORMAT_VERSION, "sample_rate": TARGET_SAMPLE_RATE, "fingerprint": fingerprint,
      "manifests": [os.path.abspath(m) for m in manifests], "sources": sources,
      "clips": sum(s["clips"] for s in sources.values()),
      "hours": sum(s["hours"] for s in sources.values()),
      "input_records": input_records,
      "skipped": dict(problems.counts),
      "duplicates": {"within_source": dup_within, "across_sources": dup_across},
      "input_hours": seconds_in / 3600, "seconds_to_prepare": round(time.monotonic() - start, 2),
  }
  tmp = out / (CORPUS_FILE + ".tmp")
  tmp.write_text(json.dumps(corpus, indent=1))
  os.replace(tmp, out / CORPUS_FILE)
  if not quiet:
    print(summary_text(corpus, out, problems))
  return {**corpus, "reused": False}


def summary_text(corpus: dict, out: Path, problems: report.ProblemLog | None = None) -> str:
  lines = [f"[prepare] wrote {corpus['clips']} clips ({corpus['hours']:.2f} h) to {out} "
           f"in {corpus['seconds_to_prepare']:.1f}s"]
  for name, s in corpus["sources"].items():
    lines.append(f"  {name:<24} {s['clips']:>7} clips {s['captions']:>7} captions {s['hours']:8.3f} h "
                 f"{len(s['shards'])} shard(s)")
  skipped = sum(corpus["skipped"].values())
  lines.append(f"  skipped {skipped} record(s)"
               + (f" ({', '.join(f'{k}: {v}' for k, v in corpus['skipped'].items())}); list in {out}/bad_records.jsonl"
                  if skipped else ""))
  if problems is not None and problems.total:
    lines.extend(problems.lines())
  return "\n".join(lines)


def load_corpus(corpus_dir) -> dict:
  """corpus.json of a finished prepare, with a clear error when absent."""
  path = epath.Path(corpus_dir) / CORPUS_FILE   # training reads corpora through epath (gs:// too)
  if not path.exists():
    raise FileNotFoundError(f"{corpus_dir} is not a prepared corpus (no {CORPUS_FILE}); run "
                            f"`python -m alp_jax.data.prepare --manifest ... --out {corpus_dir}` first")
  return json.loads(path.read_text())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.data.prepare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--manifest", action="append", required=True, help="JSONL manifest (or a folder of them)")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="decoding processes")
  parser.add_argument("--overwrite", action="store_true", help="replace a corpus made from other manifests")
  parser.add_argument("--shard-megabytes", type=float, default=256.0)
  args = parser.parse_args(argv)
  try:
    prepare(args.manifest, args.out, workers=args.workers, overwrite=args.overwrite,
            shard_megabytes=args.shard_megabytes)
  except (FileNotFoundError, PrepareError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
