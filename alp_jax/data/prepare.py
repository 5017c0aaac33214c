"""Manifests -> training shards: decode, downmix, resample to 16 kHz, validate, deduplicate, write ArrayRecord.

  python -m alp_jax.data.prepare --manifest FILE [--manifest FILE ...] --out DIR [--workers N] [--overwrite]
                                 [--max-bad-fraction 0.01] [--tokenizer FILE]

Writes into DIR:
  .alp_prepare_owner                            marks DIR as prepare's (see prepare_folder.py), written FIRST
  shards/<folder>/<folder>-NNNNN.array_record   one record per clip (format: alp_jax/data/records.py)
  index/<folder>.npz                            per clip: subset_key, num_captions, num_samples (pipeline index)
  captions.txt                                  every kept caption, one per line (tokenizer training, leakage)
  labels.json                                   per label task: each label and its clip count (class order)
  bad_records.jsonl                             every skipped record: manifest, line, id, kind, detail
  corpus.json                                   per-source statistics (clips, captions, hours, caption lengths and
                                                the share truncated at 32/64/128 tokens), written LAST
(<folder> is the source name, or a sanitised name with a hash suffix: prepare_folder.SourceFolders.)

corpus.json is the completeness marker: a crashed or aborted run leaves none, and the next run removes its
leftovers and starts over; only a folder carrying prepare's owner marker is ever cleaned, and --overwrite also
removes a tokenizer trained from the old captions. Running again with the same manifests, record format and
audio files (sizes, mtimes) reuses the finished dataset; anything else is refused unless --overwrite.

Bad records and exact-duplicate audio (a 64-bit digest of the 16 kHz int16 samples' sha1, within and across
sources; the first occurrence in manifest order is kept) are skipped and counted, never fatal, with one
exception: files that are missing or fail to read (missing_file, unreadable_file: what a flaky or unmounted
filesystem produces) may be at most --max-bad-fraction of the records that name a file (schema problems and
duplicate ids excluded), else prepare stops with an error and
publishes nothing. Schema problems, undecodable or silent audio and duplicates are properties of the data and
do not count.

Memory stays flat in the number of records: manifests are streamed, at most workers x 32 records are in
flight (submitted in chunks, collected in manifest order), skipped records go straight to bad_records.jsonl,
and per clip only what the index needs (20 bytes) plus two digest tables (ids, audio: 23-46 bytes each;
digests.py) are kept. Measured with `python -m alp_jax.benchmarks.prepare_memory`.
"""
from __future__ import annotations

import argparse
import array
import collections
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath

from alp_jax.audio.io import TARGET_SAMPLE_RATE
from alp_jax.data import caption_lengths
from alp_jax.data import digests
from alp_jax.data import ingest as ingest_lib
from alp_jax.data import manifest as mf
from alp_jax.data import prepare_folder as folder_lib
from alp_jax.data import records
from alp_jax.data import report
from alp_jax.data import subsets
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.data.prepare_folder import CORPUS_FILE, FORMAT_VERSION, LABELS_FILE, PrepareError  # noqa: F401

IO_FAILURES = (mf.MISSING_FILE, mf.UNREADABLE_FILE)  # what --max-bad-fraction counts
DEFAULT_MAX_BAD_FRACTION = 0.01
CHUNK_RECORDS = 8        # records per worker task
CHUNKS_PER_WORKER = 4    # tasks in flight per worker: bounds the decoded clips waiting in the parent
_PUBLISHED = ("shards", "index", "captions.txt", "bad_records.jsonl", LABELS_FILE)


class _SourceWriter:
  """Shards of one source, rolled over at `shard_bytes`, and its index columns (flat arrays, 20 bytes a clip)."""

  def __init__(self, root: Path, folder: str, shard_bytes: int):
    self.dir = root / "shards" / folder
    self.dir.mkdir(parents=True, exist_ok=True)
    self.name, self.shard_bytes = folder, shard_bytes
    self.paths: list[str] = []
    self.writer, self.bytes = None, 0
    self.keys, self.num_captions, self.num_samples = array.array("d"), array.array("i"), array.array("q")

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


def _ingest_chunk(chunk: list[mf.Record]) -> list:
  """In a worker: (file stat, Ingested or Problem) per record; the stat is taken before reading."""
  return [(folder_lib.file_stat(r.audio_path), ingest_lib.ingest(r)) for r in chunk]


def _chunks(items, size: int):
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _ingested(record_stream, workers: int):
  """Yields (record, file stat, Ingested | Problem) in manifest order, with bounded work in flight.

  Chunks go to the pool as the stream is read, never more than workers x CHUNKS_PER_WORKER at once; results
  are taken oldest first, so one slow file holds back at most that many chunks (not the rest of the corpus).
  """
  if workers <= 1:
    for record in record_stream:
      yield (record,) + _ingest_chunk([record])[0]
    return
  pool = multiprocessing.get_context("spawn").Pool(workers)
  pending: collections.deque = collections.deque()
  try:
    for chunk in _chunks(record_stream, CHUNK_RECORDS):
      pending.append((chunk, pool.apply_async(_ingest_chunk, (chunk,))))
      if len(pending) >= workers * CHUNKS_PER_WORKER:
        chunk, result = pending.popleft()
        yield from ((r,) + out for r, out in zip(chunk, result.get()))
    while pending:
      chunk, result = pending.popleft()
      yield from ((r,) + out for r, out in zip(chunk, result.get()))
  finally:
    pool.terminate()
    pool.join()


def _records(manifests: list[str], problems: report.ProblemLog):
  """The manifests' Records, streamed; schema problems and duplicate ids go to `problems` on the way."""
  for item in mf.read_manifests(manifests):
    if isinstance(item, mf.Problem):
      problems.add(item)
    else:
      yield item


def _too_many_io_failures(failures: int, records_seen: int, max_bad_fraction: float, problems, partial: Path):
  counts = ", ".join(f"{k}: {problems.counts[k]}" for k in IO_FAILURES if problems.counts[k])
  examples = "; ".join(f"{p.where()}: {p.detail}" for k in IO_FAILURES for p in problems.examples[k][:2])
  return PrepareError(
      f"{failures} audio file(s) missing or unreadable ({counts}) after {records_seen} record(s): more than "
      f"--max-bad-fraction {max_bad_fraction:g} of the corpus. A flaky or unmounted filesystem? Nothing was "
      f"published (no {CORPUS_FILE}); partial output in {partial} is removed by the next run. Fix the files and "
      f"rerun, or raise --max-bad-fraction to skip them. E.g. {examples}"[:2000])


def prepare(manifests, out_dir, *, workers: int = 1, quiet: bool = False, overwrite: bool = False,
            shard_megabytes: float = 256.0, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
            tokenizer: str | None = None) -> dict:
  """Prepares a corpus; returns the corpus.json content (plus 'reused': bool).

  tokenizer: a sentencepiece model whose tokens measure the kept captions' lengths (corpus.json
  "caption_lengths", data/caption_lengths.py); None counts words.

  Raises PrepareError when `out_dir` may not be used as asked, or when more than `max_bad_fraction` of the
  records name audio files that are missing or unreadable (nothing is published then).
  """
  start = time.monotonic()
  manifests = mf.resolve_manifest_paths(manifests)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  say = (lambda text: None) if quiet else print
  manifest_fp, total_lines = folder_lib.manifest_fingerprint(manifests)
  existing = folder_lib.claim(out, manifests, manifest_fp, overwrite, say)
  if existing is not None:
    return {**existing, "reused": True}

  partial = out / folder_lib.PARTIAL_DIR
  partial.mkdir()
  manifest_index = {m: i for i, m in enumerate(manifests)}
  source_index: dict[str, int] = {}
  folders = folder_lib.SourceFolders()
  writers: dict[str, _SourceWriter] = {}
  seen_audio = digests.DigestTable()  # audio digest -> source index << 48 | manifest index << 32 | line
  fingerprint = folder_lib.FileFingerprint(manifest_fp)
  dup_within = dup_across = io_failures = records_seen = ingest_skips = 0
  label_counts: dict[str, dict[str, int]] = {}
  seconds_in = 0.0
  lengths = caption_lengths.CaptionLengths(tokenizer_lib.Tokenizer(tokenizer) if tokenizer else None)
  progress = report.Progress(total_lines, "prepare", quiet)
  with open(partial / "bad_records.jsonl", "w", encoding="utf-8") as bad_file, \
       open(partial / "captions.txt", "w", encoding="utf-8") as captions_file:
    problems = report.ProblemLog(sink=bad_file)
    results = _ingested(_records(manifests, problems), workers)
    writer = None
    try:
      for record, file_stat, result in results:
        records_seen += 1
        fingerprint.add(file_stat)
        progress.update(records_seen + problems.total - ingest_skips)
        if isinstance(result, mf.Problem):
          problems.add(result)
          ingest_skips += 1
          if result.kind in IO_FAILURES:
            io_failures += 1
            if io_failures > max_bad_fraction * total_lines:  # over the threshold whatever the rest holds
              raise _too_many_io_failures(io_failures, records_seen, max_bad_fraction, problems, partial)
          continue
        r = result.record
        seconds_in += result.seconds
        if r.source not in source_index:
          if len(source_index) >= 2**15:
            raise PrepareError(f"more than {2**15} sources (at {r.manifest}:{r.line}); merge some")
          source_index[r.source] = len(source_index)
        where = (source_index[r.source] << 48) | (manifest_index[r.manifest] << 32) | r.line
        first = seen_audio.setdefault(int(result.audio_hash[:16], 16), where)
        if first is not None:
          same_source = (first >> 48) == source_index[r.source]
          dup_within, dup_across = dup_within + same_source, dup_across + (not same_source)
          ingest_skips += 1
          problems.add(mf.Problem(mf.DUPLICATE_AUDIO, f"same audio as {manifests[(first >> 32) & 0xFFFF]}:"
                                  f"{first & 0xFFFFFFFF}", r.manifest, r.line, r.id))
          continue
        writer = writers.get(r.source)
        if writer is None:
          writer = writers[r.source] = _SourceWriter(partial, folders(r.source), int(shard_megabytes * 2**20))
        writer.write(result)
        for task, value in r.labels.items():
          for label in (value if isinstance(value, list) else [value]):
            label_counts.setdefault(task, {}).setdefault(str(label), 0)
            label_counts[task][str(label)] += 1
        for caption in r.captions:
          captions_file.write(caption.replace("\n", " ") + "\n")
          lengths.add(r.source, caption)
    finally:
      results.close()
      for w in writers.values():
        w.close()
  if io_failures > max_bad_fraction * records_seen:
    raise _too_many_io_failures(io_failures, records_seen, max_bad_fraction, problems, partial)
  input_records = records_seen + problems.total - ingest_skips  # Records, plus lines that never became one
  progress.update(input_records, force=True)

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

  # Label vocabularies (task -> label -> clips), sorted: the class order of supervised objectives.
  (partial / LABELS_FILE).write_text(json.dumps(
      {task: dict(sorted(counts.items())) for task, counts in sorted(label_counts.items())}, indent=1))
  # Move everything into place; corpus.json last, atomically.
  for name in _PUBLISHED:
    src = partial / name
    if src.exists():
      os.replace(src, out / name)
  shutil.rmtree(partial)
  corpus = {
      "format_version": folder_lib.FORMAT_VERSION, "sample_rate": TARGET_SAMPLE_RATE,
      "fingerprint": fingerprint.hexdigest(), "manifest_fingerprint": manifest_fp,
      "manifests": [os.path.abspath(m) for m in manifests], "sources": sources,
      "clips": sum(s["clips"] for s in sources.values()),
      "hours": sum(s["hours"] for s in sources.values()),
      "input_records": input_records,
      "skipped": dict(problems.counts),
      "duplicates": {"within_source": dup_within, "across_sources": dup_across},
      "io_failures": io_failures, "max_bad_fraction": max_bad_fraction,
      "input_hours": seconds_in / 3600, "seconds_to_prepare": round(time.monotonic() - start, 2),
      "caption_lengths": lengths.summary(),
  }
  tmp = out / (CORPUS_FILE + ".tmp")
  tmp.write_text(json.dumps(corpus, indent=1))
  os.replace(tmp, out / CORPUS_FILE)
  say(summary_text(corpus, out, problems))
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
  if "caption_lengths" in corpus:   # absent from corpora prepared before it was measured
    lines.extend("  " + line for line in caption_lengths.summary_lines(corpus["caption_lengths"]))
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
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a corpus made from other manifests, format or audio (and its tokenizer)")
  parser.add_argument("--shard-megabytes", type=float, default=256.0)
  parser.add_argument("--max-bad-fraction", type=float, default=DEFAULT_MAX_BAD_FRACTION,
                      help="stop if more than this fraction of records name missing/unreadable audio files "
                           f"(default {DEFAULT_MAX_BAD_FRACTION})")
  parser.add_argument("--tokenizer", default=None,
                      help="sentencepiece model to measure caption lengths in its tokens (default: words)")
  args = parser.parse_args(argv)
  try:
    prepare(args.manifest, args.out, workers=args.workers, overwrite=args.overwrite,
            shard_megabytes=args.shard_megabytes, max_bad_fraction=args.max_bad_fraction, tokenizer=args.tokenizer)
  except (FileNotFoundError, PrepareError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
