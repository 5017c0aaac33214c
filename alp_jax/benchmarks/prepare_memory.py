"""Peak memory of prepare against the number of records: it should stay flat.

  python -m alp_jax.benchmarks.prepare_memory [--records 20000,200000] [--files 0] [--workers 2] [--workdir DIR]

For each size, writes a synthetic manifest whose records point at tiny real wav files (0.12 s of noise at
8 kHz, so every record is decoded, resampled, hashed and written), runs prepare in a fresh subprocess and
reports the peak resident memory of prepare's main process (ru_maxrss of the process itself), of its largest
decoding worker (ru_maxrss of its children), and records/s. `--files 0` (the default) gives every record its
own file, so every clip is kept and the index and digest tables grow as they would in a real corpus;
`--files N` cycles the records over N files (and 3 sources), so all but N are duplicate audio: merged into the
first source's clip or, within a source, skipped (the merge and skip paths).

The files are made once per size and reused from --workdir (default: a temporary folder, removed after).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

_CHILD = """
import json, resource, sys, time
from alp_jax.data import prepare
start = time.monotonic()
rc = prepare.main(sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.monotonic() - start,
                  "main_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""
_RATE, _SECONDS = 8000, 0.12


def write_corpus(root: Path, records: int, files: int) -> Path:
  """A manifest of `records` lines over `files` distinct wav files (one per record when files is 0)."""
  files = files or records
  audio_dir = root / "audio"
  audio_dir.mkdir(parents=True, exist_ok=True)
  n = int(_RATE * _SECONDS)
  header = io.BytesIO()  # every file has the same length and format, so the same wav header
  sf.write(header, np.zeros(n, np.int16), _RATE, subtype="PCM_16", format="WAV")
  header = header.getvalue()[:-2 * n]
  for i in range(files):
    path = audio_dir / f"{i:07d}.wav"
    if not path.exists():
      noise = np.random.default_rng(i).integers(-3000, 3000, n, dtype=np.int16)  # seeded by index: distinct
      path.write_bytes(header + noise.tobytes())
  manifest = root / f"m{records}_{files}.jsonl"
  with open(manifest, "w") as f:
    for i in range(records):
      f.write(json.dumps({"id": f"clip-{i}", "audio": f"audio/{i % files:07d}.wav", "source": f"src{i % 3}",
                          "captions": [f"noise burst number {i}"], "duration": _SECONDS}) + "\n")
  return manifest


def measure(manifest: Path, out: Path, workers: int) -> dict:
  shutil.rmtree(out, ignore_errors=True)
  args = ["--manifest", str(manifest), "--out", str(out), "--workers", str(workers),
          "--min-seconds", "0.1"]   # the clips are 0.12 s, under the study's 1 s minimum
  proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=False)
  if proc.returncode != 0 or not proc.stdout.strip():
    raise RuntimeError(f"prepare failed ({proc.returncode}): {proc.stderr[-2000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result["corpus"] = json.loads((out / "corpus.json").read_text())
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.benchmarks.prepare_memory", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--records", default="20000,200000", help="comma-separated manifest sizes")
  parser.add_argument("--files", type=int, default=0, help="distinct audio files (0: one per record)")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--workdir", default=None, help="where the files go (default: a temporary folder)")
  args = parser.parse_args(argv)
  root = Path(args.workdir or tempfile.mkdtemp(prefix="prepare_memory_"))
  rows = []
  try:
    for records in [int(r) for r in args.records.split(",")]:
      start = time.monotonic()
      manifest = write_corpus(root, records, args.files)
      print(f"[prepare_memory] {records} records over {args.files or records} files written in "
            f"{time.monotonic() - start:.0f}s; running prepare", file=sys.stderr, flush=True)
      r = measure(manifest, root / "out", args.workers)
      rows.append((records, r))
      print(f"[prepare_memory] {records} records: main {r['main_kb'] / 1024:.0f} MB, worker "
            f"{r['worker_kb'] / 1024:.0f} MB, {records / r['seconds']:.0f} records/s", file=sys.stderr, flush=True)
  finally:
    if not args.workdir:
      shutil.rmtree(root, ignore_errors=True)
  print(f"prepare peak memory ({args.workers} workers, {os.cpu_count()} CPUs, "
        f"{'one file per record' if not args.files else f'{args.files} files'})")
  print(f"{'records':>9} {'kept':>9} {'main MB':>8} {'worker MB':>10} {'records/s':>10} {'seconds':>8}")
  for records, r in rows:
    print(f"{records:>9} {r['corpus']['clips']:>9} {r['main_kb'] / 1024:>8.0f} {r['worker_kb'] / 1024:>10.0f} "
          f"{records / r['seconds']:>10.0f} {r['seconds']:>8.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
