"""Where runs, checkpoints, exported encoders and corpora live: `etils.epath` paths, local or remote alike.

  paths.resolve("runs/a")          -> epath.Path("/current/dir/runs/a")   a local path is made absolute (Orbax
                                                                          refuses relative checkpoint paths)
  paths.resolve("gs://bucket/a")   -> epath.Path("gs://bucket/a")         a remote path is left as it is

Never wrap such a path in `pathlib.Path`: `pathlib.Path("gs://bucket/run")` is the local folder `gs:/bucket/run`,
and so is `epath.Path("gs://bucket/run").absolute()`. Libraries that read remote paths themselves (Orbax, grain,
tensorstore, tensorboardX) get `os.fspath(path)`, the string unchanged.
"""
from __future__ import annotations

import hashlib
import os

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
  """gs://, s3:// ...: a path that only epath (or the library it is handed to) can open."""
  return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
  """An epath.Path: local paths absolute, remote ones unchanged."""
  return epath.Path(path) if is_remote(path) else epath.Path(os.path.abspath(os.fspath(path)))


def sha1(path: str | os.PathLike) -> str:
  """Hex sha1 of a file's bytes."""
  return hashlib.sha1(epath.Path(path).read_bytes()).hexdigest()


def write_text_last(path: str | os.PathLike, text: str) -> None:
  """Writes `path` whole or not at all (a sibling temporary file, then a rename), so a reader never sees half."""
  path = epath.Path(path)
  partial = path.parent / (path.name + ".partial")
  partial.write_text(text)
  partial.replace(path)
