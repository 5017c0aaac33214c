"""Checks every record of one or more manifests and reports problems by kind.

  python -m alp_jax.data.validate --manifest FILE [--manifest FILE ...] [--strict] [--workers N] [--no-audio]
                                  [--tokenizer FILE]

Exit 0 with a report; with --strict, exit 1 when any record has a problem. Audio is decoded (all kinds of
bad audio are found) unless --no-audio, which checks only the JSON and that files exist. The report ends with the
caption lengths of the well-formed records and the share truncated at 32/64/128 tokens (words unless --tokenizer;
data/caption_lengths.py).
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys

from alp_jax.data import caption_lengths
from alp_jax.data import ingest as ingest_lib
from alp_jax.data import manifest as mf
from alp_jax.data import report
from alp_jax.data import tokenizer as tokenizer_lib


def _check(record: mf.Record):
  return ingest_lib.ingest(record, keep_audio=False)


def validate(manifests, *, workers: int = 1, decode_audio: bool = True, quiet: bool = False,
             tokenizer: str | None = None) -> dict:
  """Returns {"records": n, "ok": n, "seconds": total audio s, "problems": ProblemLog, "caption_lengths": summary
  of the well-formed records' captions (CaptionLengths.summary, in `tokenizer`'s tokens or words)}."""
  paths = mf.resolve_manifest_paths(manifests)
  problems = report.ProblemLog()
  lengths = caption_lengths.CaptionLengths(tokenizer_lib.Tokenizer(tokenizer) if tokenizer else None)
  records = []
  for item in mf.read_manifests(paths):
    if isinstance(item, mf.Problem):
      problems.add(item)
    else:
      records.append(item)
      for caption in item.captions:
        lengths.add(item.source, caption)
  n_lines = len(records) + problems.total
  ok, seconds = 0, 0.0
  progress = report.Progress(len(records), "validate", quiet)
  if decode_audio:
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    results = pool.imap(_check, records, chunksize=8) if pool else map(_check, records)
    try:
      for i, result in enumerate(results, 1):
        if isinstance(result, mf.Problem):
          problems.add(result)
        else:
          ok += 1
          seconds += result.seconds
        progress.update(i)
    finally:
      if pool:
        pool.close()
        pool.join()
  else:
    for record in records:
      problem = mf.check_file(record)
      if problem:
        problems.add(problem)
      else:
        ok += 1
  return {"manifests": paths, "records": n_lines, "ok": ok, "seconds": seconds, "problems": problems,
          "caption_lengths": lengths.summary()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.data.validate", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--manifest", action="append", required=True, help="JSONL manifest (or a folder of them)")
  parser.add_argument("--strict", action="store_true", help="exit 1 if any record has a problem")
  parser.add_argument("--workers", type=int, default=1, help="decoding processes")
  parser.add_argument("--no-audio", action="store_true", help="do not decode audio (schema and files only)")
  parser.add_argument("--tokenizer", default=None,
                      help="sentencepiece model to measure caption lengths in its tokens (default: words)")
  args = parser.parse_args(argv)
  try:
    result = validate(args.manifest, workers=args.workers, decode_audio=not args.no_audio, tokenizer=args.tokenizer)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  problems = result["problems"]
  print(f"validated {result['records']} records in {len(result['manifests'])} manifest(s): "
        f"{result['ok']} ok, {problems.total} with problems"
        + (f", {result['seconds'] / 3600:.2f} h of good audio" if result["seconds"] else ""))
  if problems.total:
    print("problems (kind, count, first examples):")
    print("\n".join(problems.lines()))
    print("prepare skips these records and lists them in bad_records.jsonl beside the shards.")
  print("\n".join(caption_lengths.summary_lines(result["caption_lengths"])))
  return 1 if (args.strict and problems.total) else 0


if __name__ == "__main__":
  sys.exit(main())
