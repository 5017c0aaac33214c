"""prepare's output folder: who owns it, when a finished corpus is reused, and where each source's files go.

Ownership. Before writing anything prepare puts OWNER_FILE (`.alp_prepare_owner`, JSON: tool, format
version, creation time) into --out. Leftovers of an unfinished run (OWNED: shards/, index/, captions.txt,
bad_records.jsonl, merged_records.jsonl, labels.json, .partial/, and the tokenizer trained from those captions)
are deleted only in a folder that carries the marker (or a corpus.json that prepare wrote, for corpora made
before the marker existed). A folder that holds any of those names without either is refused, and nothing in
it is touched.
Other files in --out are never touched.

Reuse key. corpus.json stores `manifest_fingerprint` (sha1 over each manifest's absolute path and bytes,
plus FORMAT_VERSION) and `fingerprint` (that, plus the size and mtime of every record's audio file, in
manifest order), and `settings` (the duration rule). A finished corpus is reused only when all three match;
checking the second stats every audio file once (streamed, about a minute per million files on a local disk,
more on a network filesystem). Anything else (other manifests, another record format, other settings,
re-encoded or touched audio) is refused without --overwrite, and nothing is deleted.

Source folders. A source name that is already a safe file name (letters, digits, `_ . -`, not starting with
`.`, at most 100 characters) is its own folder; any other gets the sanitised name plus `-` and 8 hex
digits of its sha1 (`a/b` -> `a_b-<hash>`, while a source literally named `a_b` stays `a_b`), so two
sources never share shards. Two sources whose folders differ only in case (`Clotho`, `clotho`) are refused,
naming both, since they would collide on a case-insensitive filesystem.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import struct
from pathlib import Path

from alp_jax.data import manifest as mf
from alp_jax.data import tokenizer as tokenizer_lib

FORMAT_VERSION = 3  # 2: owner marker, fingerprint over audio file sizes/mtimes, collision-free source folders
                    # 3: cross-source duplicates merged (records' `sources`, `merged_ids`), the duration rule
OWNER_FILE = ".alp_prepare_owner"
CORPUS_FILE = "corpus.json"
LABELS_FILE = "labels.json"
MERGED_FILE = "merged_records.jsonl"
PARTIAL_DIR = ".partial"
TOKENIZER_FILES = (tokenizer_lib.MODEL_FILE, str(Path(tokenizer_lib.MODEL_FILE).with_suffix(".vocab")))
OWNED = ("shards", "index", "captions.txt", "bad_records.jsonl", MERGED_FILE, LABELS_FILE,
         PARTIAL_DIR) + TOKENIZER_FILES
_MAX_FOLDER_CHARS = 100


class PrepareError(Exception):
  """The output folder cannot be used as asked (message says what to do)."""


def manifest_fingerprint(manifests: list[str]) -> tuple[str, int]:
  """(sha1 over FORMAT_VERSION and each manifest's absolute path and bytes, number of non-empty lines)."""
  h = hashlib.sha1(f"alp_jax.prepare format {FORMAT_VERSION}\n".encode())
  lines = 0
  for path in manifests:
    h.update(os.path.abspath(path).encode() + b"\0")
    with open(path, "rb") as f:
      for line in f:  # streamed: manifests of millions of lines never sit in memory
        h.update(line)
        lines += bool(line.strip())
  return h.hexdigest(), lines


class FileFingerprint:
  """The full reuse key: the manifest fingerprint, then (size, mtime) of each record's audio in order."""

  def __init__(self, manifest_fp: str):
    self._h = hashlib.sha1(manifest_fp.encode())

  def add(self, file_stat: tuple[int, int] | None) -> None:
    self._h.update(struct.pack("<qq", *(file_stat or (-1, -1))))

  def hexdigest(self) -> str:
    return self._h.hexdigest()


def file_stat(path: str) -> tuple[int, int] | None:
  """(size in bytes, mtime in ns), or None when the file cannot be stat'ed."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_size, st.st_mtime_ns


def full_fingerprint(manifests: list[str], manifest_fp: str) -> str:
  """What `prepare` computes while it runs, recomputed by one streamed pass (stats every audio file)."""
  fp = FileFingerprint(manifest_fp)
  for item in mf.read_manifests(manifests):
    if isinstance(item, mf.Record):
      fp.add(file_stat(item.audio_path))
  return fp.hexdigest()


class SourceFolders:
  """Source name -> folder name under shards/ and index/, never the same folder for two sources."""

  def __init__(self):
    self._folder: dict[str, str] = {}
    self._owner: dict[str, str] = {}  # lower-cased folder -> source

  def __call__(self, source: str) -> str:
    folder = self._folder.get(source)
    if folder is not None:
      return folder
    folder = re.sub(r"[^A-Za-z0-9_.-]", "_", source)
    if folder != source or folder.startswith(".") or len(folder) > _MAX_FOLDER_CHARS:
      stem = folder.lstrip(".")[:_MAX_FOLDER_CHARS] or "source"
      folder = f"{stem}-{hashlib.sha1(source.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    other = self._owner.get(folder.lower())
    if other is not None:
      raise PrepareError(f"sources {other!r} and {source!r} would share the folder shards/{folder} (names that "
                         f"differ only in case collide on some filesystems); rename one of them in the manifests")
    self._folder[source], self._owner[folder.lower()] = folder, source
    return folder


def _is_prepare_corpus(path: Path) -> bool:
  try:
    existing = json.loads(path.read_text())
  except (OSError, ValueError):
    return False
  return isinstance(existing, dict) and "fingerprint" in existing and "format_version" in existing


def _remove(path: Path) -> None:
  shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def claim(out: Path, manifests: list[str], manifest_fp: str, overwrite: bool, say,
          settings: dict | None = None) -> dict | None:
  """Returns the corpus.json to reuse, or None once `out` is marked as ours and cleared of our leftovers.

  settings: what else shapes the output (prepare's duration rule); a corpus made with other settings is not reused.

  Raises PrepareError (having deleted nothing) when `out` holds a corpus that may not be replaced, or
  files with prepare's names that prepare did not write.
  """
  corpus_file, owner_file = out / CORPUS_FILE, out / OWNER_FILE
  owned = owner_file.is_file() or _is_prepare_corpus(corpus_file)
  present = [name for name in OWNED + (CORPUS_FILE,) if (out / name).exists() or (out / name).is_symlink()]
  if present and not owned:
    raise PrepareError(f"{out} holds {', '.join(present)} not created by prepare (no {OWNER_FILE}); "
                       f"move them or choose another --out. Nothing was deleted.")
  if corpus_file.exists():
    existing = json.loads(corpus_file.read_text())
    if not overwrite:
      if existing.get("format_version") != FORMAT_VERSION:
        raise PrepareError(f"{out} holds a corpus in record format {existing.get('format_version')}; this prepare "
                           f"writes format {FORMAT_VERSION}. Use another --out, or --overwrite to rebuild it.")
      if existing.get("manifest_fingerprint") != manifest_fp:
        raise PrepareError(f"{out} already holds a prepared corpus made from other manifests "
                           f"({', '.join(existing.get('manifests', []))[:300]}). Use another --out, or --overwrite.")
      if settings is not None and existing.get("settings") != settings:
        raise PrepareError(f"{out} holds a corpus of these manifests prepared with other settings "
                           f"({existing.get('settings')}; this run: {settings}). Use another --out, or --overwrite.")
      say(f"[prepare] {out} holds a corpus of these manifests; checking the audio files' sizes and mtimes")
      if existing.get("fingerprint") != full_fingerprint(manifests, manifest_fp):
        raise PrepareError(f"{out} holds a corpus of these manifests, but audio files changed since (size or "
                           f"mtime). Use another --out, or --overwrite to rebuild it.")
      say(f"[prepare] {out} already holds this corpus (same manifests, format and audio files): reusing it.")
      return existing
  if not owner_file.exists():
    owner_file.write_text(json.dumps({"tool": "alp_jax.data.prepare", "format_version": FORMAT_VERSION,
                                      "created": datetime.datetime.now().isoformat(timespec="seconds")}))
  if corpus_file.exists():
    corpus_file.unlink()  # first: from here on the folder never looks complete
  leftovers = [name for name in present if name != CORPUS_FILE]
  if leftovers:
    say(f"[prepare] removing {', '.join(leftovers)} from {out} (an earlier run's, replaced now)")
  for name in leftovers:
    _remove(out / name)
  return None
