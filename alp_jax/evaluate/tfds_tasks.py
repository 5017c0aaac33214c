"""Probe tasks from locally prepared TensorFlow Datasets (file format array_record), read with numpy only.

  read_tfds_task("NAME[/CONFIG][:VERSION]", data_dir=None, splits=None, audio_key="audio", label_key="label",
                 sample_rate=None) -> tasks.Task

The dataset must already be prepared on disk, as DATA_DIR/NAME[/CONFIG]/VERSION (the newest version when
none is given); DATA_DIR is `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets. Nothing is
downloaded or prepared here. Records are read through tfds's array_record data source
(`builder.as_data_source`), which decodes with numpy: TensorFlow is not needed. A dataset prepared as
tfrecord (tfds's default) is refused with the command that re-prepares it as array_record.

Splits: task split <- TFDS split, by default train <- "train", test <- "test", valid <- "validation" (only
when the dataset has one; otherwise the probe carves its validation split from train). `splits` replaces
that mapping (train and test required, valid optional), and any TFDS split expression works on the right:
{"train": "train[:80%]", "test": "train[80%:]"}.

Audio (`audio_key`): a tfds.features.Audio feature, or a Tensor of samples, (N,) or (N, C): float (used
as is), int16 (/ 2**15), int32 or int64 (/ 2**15 when the clip fits the 16-bit range, as Audio features
decoded from 16-bit files do, else / 2**31). The sample rate comes from the Audio feature's metadata;
`sample_rate` overrides it and is required for a Tensor. tfds's Audio class needs TensorFlow just to be
constructed, so its features.json entry is read as the Tensor it is stored as (an Audio feature prepared
without lazy_decode is exactly that); lazily stored audio (encoded file bytes) is refused with what to do.

Labels (`label_key`): a ClassLabel (single-label, accuracy) or Sequence(ClassLabel) (multi-label, mAP;
a clip may have no label). The classes are the ClassLabel's names, in its order.

Each example carries an AudioSource that re-reads its record when embedded (nothing is held in memory);
its key names the dataset folder, a signature of its files (names, sizes, mtimes), the split, the index,
the audio feature and the sample rate, so the embedding cache follows the data.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from alp_jax.audio import io as audio_io
from alp_jax.evaluate import tasks as tasks_lib

DEFAULT_SPLITS = {"train": "train", "test": "test", "valid": "validation"}
ARRAY_RECORD = "array_record"
AUDIO_CLASS = "tensorflow_datasets.core.features.audio_feature.Audio"
TENSOR_CLASS = "tensorflow_datasets.core.features.tensor_feature.Tensor"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
PROGRESS_EVERY_S = 10.0


class TfdsTaskError(tasks_lib.TaskFormatError):
  """A TFDS dataset that cannot be read as a probe task; the message names the dataset and the data dir."""


def default_data_dir() -> Path:
  return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def parse_split_map(text: str | None) -> dict[str, str]:
  """"train=train,test=validation[:50%]" -> {"train": "train", "test": "validation[:50%]"}."""
  if not text:
    return {}
  mapping = {}
  for part in text.split(","):
    task_split, eq, tfds_split = (s.strip() for s in part.partition("="))
    if not eq or task_split not in tasks_lib.SPLITS or not tfds_split:
      raise TfdsTaskError(f"--tfds-split {text!r}: expected TASK_SPLIT=TFDS_SPLIT[,...] with TASK_SPLIT in "
                          f"{list(tasks_lib.SPLITS)}, got {part!r}")
    mapping[task_split] = tfds_split
  return mapping


def _versions(directory: Path) -> list[str]:
  """Prepared versions in `directory` (x.y.z folders holding dataset_info.json), oldest first."""
  found = [d.name for d in directory.iterdir() if _VERSION.match(d.name) and (d / "dataset_info.json").exists()]
  return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def find_builder_dir(spec: str, data_dir: str | os.PathLike | None = None) -> Path:
  """NAME[/CONFIG][:VERSION] -> DATA_DIR/NAME[/CONFIG]/VERSION, with errors that say what is there instead."""
  data_dir = Path(data_dir).expanduser().absolute() if data_dir else default_data_dir()
  name_config, _, version = spec.partition(":")
  name, _, config = name_config.partition("/")
  if not name or "/" in config or (version and not _VERSION.match(version)):
    raise TfdsTaskError(f"TFDS dataset {spec!r}: expected NAME[/CONFIG][:VERSION], e.g. speech_commands:0.0.3")
  if not data_dir.is_dir():
    raise TfdsTaskError(f"TFDS dataset {spec!r}: data dir {data_dir} does not exist (prepare the dataset there, "
                        f"or point --tfds-data-dir / $TFDS_DATA_DIR at the folder that holds it)")
  root = data_dir / name / config if config else data_dir / name
  if config and not root.is_dir() and (data_dir / name).is_dir():
    configs = sorted(d.name for d in (data_dir / name).iterdir() if d.is_dir() and _versions(d))
    raise TfdsTaskError(f"TFDS dataset {spec!r}: config {config!r} is not prepared in data dir {data_dir} "
                        f"(configs there: {', '.join(configs) or 'none'}; versions without a config: "
                        f"{', '.join(_versions(data_dir / name)) or 'none'})")
  if not root.is_dir():
    present = sorted(d.name for d in data_dir.iterdir() if d.is_dir() and d.name not in ("downloads", "manual"))
    raise TfdsTaskError(f"TFDS dataset {spec!r} is not prepared in data dir {data_dir} ({root} does not exist; "
                        f"datasets there: {', '.join(present) or 'none'})")
  if version:
    if not (root / version / "dataset_info.json").exists():
      raise TfdsTaskError(f"TFDS dataset {spec!r}: version {version} is not prepared in data dir {data_dir} "
                          f"(prepared versions: {', '.join(_versions(root)) or 'none'})")
    return root / version
  versions = _versions(root)
  if not versions:
    configs = sorted(d.name for d in root.iterdir() if d.is_dir() and _versions(d))
    if configs and not config:
      raise TfdsTaskError(f"TFDS dataset {spec!r} in data dir {data_dir} has configs {', '.join(configs)}: "
                          f"name one, e.g. {name}/{configs[0]}")
    raise TfdsTaskError(f"TFDS dataset {spec!r}: no prepared version (x.y.z/dataset_info.json) in {root}")
  return root / versions[-1]


def _audio_as_tensor(node: dict) -> tuple[dict, dict]:
  """An Audio entry of features.json -> (the Tensor entry it is stored as, its metadata)."""
  if "audio" in node:                                        # proto JSON (TFDS >= 4.6)
    content = node["audio"]
    meta = {"dtype": content.get("dtype", "int64"), "dimensions": content.get("shape", {}).get("dimensions", []),
            "sample_rate": int(content.get("sampleRate", 0) or 0), "encoding": content.get("encoding", "none"),
            "lazy": bool(content.get("lazyDecode", False)), "file_format": content.get("fileFormat")}
  else:                                                      # legacy JSON feature
    content = json.loads(node.get("jsonFeature", {}).get("json", "{}"))
    meta = {"dtype": content.get("dtype", "int64"), "dimensions": [str(d if d is not None else -1)
                                                                   for d in content.get("shape", [-1])],
            "sample_rate": int(content.get("sample_rate") or 0), "encoding": "none",
            "lazy": bool(content.get("lazy_decode", False)), "file_format": content.get("file_format")}
  stored = ({"dtype": "string", "shape": {}, "encoding": "none"} if meta["lazy"] else   # the encoded file's bytes
            {"dtype": meta["dtype"], "shape": {"dimensions": meta["dimensions"]}, "encoding": meta["encoding"]})
  return {"pythonClassName": TENSOR_CLASS, "tensor": stored}, meta


def _replace_audio_features(node, path: str, found: dict[str, dict]):
  """A copy of the features.json tree with every Audio entry replaced by its stored Tensor; found[path] = meta."""
  if isinstance(node, dict):
    if node.get("pythonClassName") == AUDIO_CLASS:
      tensor, meta = _audio_as_tensor(node)
      found[path] = meta
      return tensor
    return {k: _replace_audio_features(v, f"{path}/{k}" if path else k, found) for k, v in node.items()}
  if isinstance(node, list):
    return [_replace_audio_features(v, path, found) for v in node]
  return node


def _files_signature(builder_dir: Path) -> str:
  """sha1 of (name, size, mtime) of every file of the prepared dataset: changes when it is re-prepared."""
  digest = hashlib.sha1()
  for path in sorted(builder_dir.iterdir()):
    if path.is_file():
      stat = path.stat()
      digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:16]


def _to_float(samples: np.ndarray, where: str) -> np.ndarray:
  """Stored samples -> float32 in [-1, 1] (see the module docstring for the integer scales)."""
  samples = np.asarray(samples)
  if np.issubdtype(samples.dtype, np.floating):
    return samples.astype(np.float32, copy=False)
  if samples.dtype == np.int16:
    return samples.astype(np.float32) / 2.0 ** 15
  if samples.dtype in (np.int32, np.int64):
    peak = int(np.abs(samples).max()) if samples.size else 0
    return (samples / (2.0 ** 15 if peak <= 2 ** 15 else 2.0 ** 31)).astype(np.float32)
  raise audio_io.AudioDecodeError(f"{where}: audio samples of dtype {samples.dtype} are not supported "
                                  f"(store float, int16, int32 or int64 samples)")


def _load_record(source, index: int, audio_key: str, sample_rate: int, where: str) -> tuple[np.ndarray, int]:
  try:
    samples = source[index][audio_key]
  except Exception as e:  # a damaged record is reported and skipped by embed_task, never a crash
    raise audio_io.AudioDecodeError(f"{where}: cannot read the record ({type(e).__name__}: {e})") from e
  samples = _to_float(samples, where)
  if samples.ndim not in (1, 2):
    raise audio_io.AudioDecodeError(f"{where}: audio must be (N,) or (N, C) samples, got shape {samples.shape}")
  return samples, sample_rate


def _require_tfds() -> None:
  try:
    import tensorflow_datasets  # noqa: F401
  except ImportError as e:
    raise TfdsTaskError("reading TFDS datasets needs the tensorflow-datasets package (TensorFlow is not needed): "
                        "pip install 'alp_jax[tfds]'") from e


def _check_audio_feature(feature, audio_key: str, where: str) -> None:
  import tensorflow_datasets as tfds
  numeric = isinstance(feature, tfds.features.Tensor) and not isinstance(feature, tfds.features.ClassLabel) and (
      np.issubdtype(feature.np_dtype, np.integer) or np.issubdtype(feature.np_dtype, np.floating))
  if not numeric or len(feature.shape) not in (1, 2):
    raise TfdsTaskError(f"{where}: audio feature {audio_key!r} is {feature!r}; it must be an Audio feature or a "
                        f"Tensor of samples, shape (N,) or (N, C): pass --tfds-audio-key")


def _label_reader(features, label_key: str, where: str) -> tuple[list[str], bool, Callable]:
  """-> (class names, multi_label, record -> tuple of label names)."""
  import tensorflow_datasets as tfds
  feature = features[label_key]

  def name_of(names: list[str], value) -> str:
    if not 0 <= int(value) < len(names):   # -1 marks an unlabelled record in some datasets
      raise ValueError(f"label {int(value)} is not one of the {len(names)} classes")
    return names[int(value)]

  if isinstance(feature, tfds.features.ClassLabel):
    names = list(feature.names)
    return names, False, lambda value: (name_of(names, value),)
  if isinstance(feature, tfds.features.Sequence) and isinstance(feature.feature, tfds.features.ClassLabel):
    names = list(feature.feature.names)
    return names, True, lambda value: tuple(sorted({name_of(names, v) for v in np.ravel(value)}))
  raise TfdsTaskError(f"{where}: label feature {label_key!r} is {type(feature).__name__}; it must be a ClassLabel "
                      f"(single-label) or Sequence(ClassLabel) (multi-label): pass --tfds-label-key")


def read_tfds_task(spec: str, *, data_dir: str | os.PathLike | None = None, splits: dict[str, str] | None = None,
                   audio_key: str = "audio", label_key: str = "label", sample_rate: int | None = None,
                   log: Callable[[str], None] | None = print) -> tasks_lib.Task:
  """A locally prepared array_record TFDS dataset as a probe Task. Raises TfdsTaskError naming the dataset
  and the data dir when it cannot be found or used (see the module docstring for every setting)."""
  _require_tfds()
  from google.protobuf import json_format
  from tensorflow_datasets.core import dataset_info
  from tensorflow_datasets.core import read_only_builder
  from tensorflow_datasets.core.proto import feature_pb2

  builder_dir = find_builder_dir(spec, data_dir)
  where = f"TFDS dataset {spec!r} ({builder_dir})"
  info_proto = dataset_info.read_proto_from_builder_dir(builder_dir)
  formats = {info_proto.file_format or "tfrecord", *info_proto.alternative_file_formats}
  if ARRAY_RECORD not in formats:
    raise TfdsTaskError(f"{where} is prepared as {', '.join(sorted(formats))}; reading without TensorFlow needs "
                        f"array_record: prepare it with `tfds build {spec.partition(':')[0]} --file_format="
                        f"array_record` (or builder.download_and_prepare(file_format='array_record'))")
  features_path = builder_dir / "features.json"
  if not features_path.exists():
    raise TfdsTaskError(f"{where}: no features.json (prepared with TFDS <= 3.2?): re-prepare it")
  audio_meta: dict[str, dict] = {}
  features_json = _replace_audio_features(json.loads(features_path.read_text()), "", audio_meta)
  info_proto.features.CopyFrom(json_format.ParseDict(features_json, feature_pb2.Feature()))
  try:
    builder = read_only_builder.builder_from_metadata(builder_dir, info_proto)
  except ModuleNotFoundError as e:   # a feature class (Image, Video, ...) that TFDS builds with TensorFlow
    classes = sorted(set(re.findall(r'"pythonClassName": "[\w.]+\.(\w+)"', features_path.read_text())))
    raise TfdsTaskError(f"{where}: its features ({', '.join(classes)}) cannot be read without {e.name}; only "
                        f"Audio, Tensor, ClassLabel, Sequence and FeaturesDict are: store audio as an int16 "
                        f"Tensor") from None
  features = builder.info.features
  if audio_key not in features:
    raise TfdsTaskError(f"{where} has no feature {audio_key!r} (features: {', '.join(features)}): "
                        f"pass --tfds-audio-key")
  if label_key not in features:
    raise TfdsTaskError(f"{where} has no feature {label_key!r} (features: {', '.join(features)}): "
                        f"pass --tfds-label-key")
  meta = audio_meta.get(f"featuresDict/features/{audio_key}")
  if meta is not None and meta["lazy"]:
    raise TfdsTaskError(f"{where}: audio feature {audio_key!r} is stored lazily as encoded "
                        f"{meta['file_format'] or 'file'} bytes, whose decoding needs TensorFlow; prepare it with "
                        f"tfds.features.Audio(lazy_decode=False) or store the samples as an int16 Tensor")
  _check_audio_feature(features[audio_key], audio_key, where)
  rate = sample_rate or (meta["sample_rate"] if meta else 0)
  if not rate:
    kind = "an Audio feature without a sample rate" if meta else "a Tensor"
    raise TfdsTaskError(f"{where}: audio feature {audio_key!r} is {kind}: pass --tfds-sample-rate")
  if meta and sample_rate and meta["sample_rate"] and sample_rate != meta["sample_rate"] and log:
    log(f"[tfds] {spec}: --tfds-sample-rate {sample_rate} overrides the feature's {meta['sample_rate']} Hz")
  classes, multi_label, labels_of = _label_reader(features, label_key, where)

  available = list(builder.info.splits.keys())
  mapping = dict(splits or DEFAULT_SPLITS)
  if not splits and DEFAULT_SPLITS["valid"] not in available:
    mapping.pop("valid")
  if not {"train", "test"} <= set(mapping):
    raise TfdsTaskError(f"{where}: the split mapping {mapping} needs train and test (splits there: "
                        f"{', '.join(available)})")
  mapping = {s: mapping[s] for s in tasks_lib.SPLITS if s in mapping}
  signature = _files_signature(builder_dir)
  task_splits, t0, last_report = {}, time.monotonic(), time.monotonic()
  for task_split, tfds_split in mapping.items():
    try:
      source = builder.as_data_source(split=tfds_split)
    except (ValueError, KeyError, AssertionError) as e:
      raise TfdsTaskError(f"{where}: cannot read split {tfds_split!r} as the {task_split} split ({e}); splits "
                          f"there: {', '.join(available)}; map them with --tfds-split "
                          f"train=...,test=...") from None
    examples = []
    for index in range(len(source)):
      name = f"{spec}[{tfds_split}][{index}]"
      try:
        labels = labels_of(source[index][label_key])
      except Exception as e:
        raise TfdsTaskError(f"{where}: record {index} of split {tfds_split!r} cannot be read "
                            f"({type(e).__name__}: {e})") from None
      key = f"tfds|{builder_dir}|{signature}|{tfds_split}|{index}|{audio_key}|{rate}"
      load = functools.partial(_load_record, source, index, audio_key, rate, name)
      examples.append(tasks_lib.Example(path=builder_dir / f"{tfds_split}[{index}]", labels=labels,
                                        audio=tasks_lib.AudioSource(key=key, load=load)))
      now = time.monotonic()
      if log and now - last_report > PROGRESS_EVERY_S:
        log(f"[tfds] {spec}: reading labels of {tfds_split}: {index + 1}/{len(source)}")
        last_report = now
    if not examples:
      raise TfdsTaskError(f"{where}: split {tfds_split!r} (the {task_split} split) is empty")
    task_splits[task_split] = examples
  if log:
    counts = ", ".join(f"{s} {len(e)} (tfds {mapping[s]!r})" for s, e in task_splits.items())
    log(f"[tfds] {spec}: {builder_dir}: {counts}; {len(classes)} classes, "
        f"{'multi-label' if multi_label else 'single-label'}; audio {audio_key!r} at {rate} Hz "
        f"({time.monotonic() - t0:.1f}s)")
  return tasks_lib.Task(name=spec, directory=builder_dir, splits=task_splits, classes=classes,
                        metric=tasks_lib.MULTI_LABEL if multi_label else tasks_lib.SINGLE_LABEL)


def add_arguments(parser) -> None:
  """The --tfds flags of `python -m alp_jax.evaluate`."""
  group = parser.add_argument_group("TFDS tasks (locally prepared, file format array_record; no TensorFlow)")
  group.add_argument("--tfds", action="append", default=[], metavar="NAME[/CONFIG][:VERSION]",
                     help="a prepared TFDS dataset as a probe task (repeatable)")
  group.add_argument("--tfds-data-dir", default=None,
                     help="folder holding NAME/[CONFIG/]VERSION (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  group.add_argument("--tfds-split", default=None, metavar="TASK_SPLIT=TFDS_SPLIT,...",
                     help="task splits from TFDS splits or slices, replacing the default train=train,test=test "
                          "(and valid=validation when present), e.g. train=train[:80%%],test=train[80%%:]")
  group.add_argument("--tfds-audio-key", default="audio", help="audio feature (Audio, or a Tensor of samples)")
  group.add_argument("--tfds-label-key", default="label", help="ClassLabel or Sequence(ClassLabel) feature")
  group.add_argument("--tfds-sample-rate", type=int, default=None,
                     help="sample rate of the audio (required for a Tensor; overrides an Audio feature's)")


def tasks_from_args(args, log: Callable[[str], None] | None = print) -> list[tasks_lib.Task]:
  """One Task per --tfds flag, with the shared --tfds-* settings. Raises TfdsTaskError."""
  splits = parse_split_map(args.tfds_split)
  return [read_tfds_task(spec, data_dir=args.tfds_data_dir, splits=splits, audio_key=args.tfds_audio_key,
                         label_key=args.tfds_label_key, sample_rate=args.tfds_sample_rate, log=log)
          for spec in args.tfds]
