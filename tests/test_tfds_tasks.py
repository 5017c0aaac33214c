"""TFDS tasks without TensorFlow: a tiny array_record dataset built here with tfds's own writer, read back as a
probe task, evaluated through the CLI, and the errors for what cannot be read."""
import json
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from google.protobuf import json_format
from tensorflow_datasets.core.proto import feature_pb2

RATE = 8000
CLIPS = {"train": 12, "validation": 4, "test": 8}
NAME = "tone_task"


def _clip(index: int) -> tuple[np.ndarray, int, tuple[int, ...]]:
  """(int16 samples, label: 0 low / 1 high, tags) of clip `index`: a noisy 250-400 Hz or 2-3 kHz tone."""
  rng = np.random.default_rng(index)
  label = index % 2
  hz = rng.uniform(250.0, 400.0) if label == 0 else rng.uniform(2000.0, 3000.0)
  t = np.arange(int(rng.uniform(0.4, 0.7) * RATE)) / RATE
  wave = 0.4 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(len(t))
  tags = (label,) if index % 3 else (label, 2)
  return np.round(wave * 32767).astype(np.int16), label, tags


class ToneTask(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Written without TensorFlow: Tensor, ClassLabel and Sequence features only."""
  name = NAME
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
        "samples": tfds.features.Tensor(shape=(None,), dtype=np.float32),
        "label": tfds.features.ClassLabel(names=["low", "high"]),
        "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=["low", "high", "odd"])),
    }))

  def _split_generators(self, dl_manager):
    starts = {"train": 0, "validation": CLIPS["train"], "test": CLIPS["train"] + CLIPS["validation"]}
    return {split: self._generate_examples(starts[split], starts[split] + n) for split, n in CLIPS.items()}

  def _generate_examples(self, start: int, stop: int):
    for index in range(start, stop):
      audio, label, tags = _clip(index)
      yield index, {"audio": audio, "samples": (audio / 32768.0).astype(np.float32), "label": label,
                    "tags": list(tags)}


def _set_audio_feature(builder_dir, key: str, **audio) -> None:
  """Rewrites features.json so `key` is a tfds.features.Audio, exactly as TFDS (with TensorFlow) writes one."""
  path = builder_dir / "features.json"
  features = json.loads(path.read_text())
  entry = feature_pb2.Feature(python_class_name="tensorflow_datasets.core.features.audio_feature.Audio",
                              audio=feature_pb2.AudioFeature(shape=feature_pb2.Shape(dimensions=[-1]), **audio))
  features["featuresDict"]["features"][key] = json_format.MessageToDict(entry)
  path.write_text(json.dumps(features, indent=4))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A TFDS data dir with tone_task/1.0.0 in array_record; "audio" declared as Audio(int16, 8 kHz)."""
  out = tmp_path_factory.mktemp("tfds")
  tfds.disable_progress_bar()
  ToneTask(data_dir=str(out), file_format="array_record").download_and_prepare()
  _set_audio_feature(out / NAME / "1.0.0", "audio", dtype="int16", sample_rate=RATE, encoding="none")
  return out


def _clips_by_audio(start: int, stop: int) -> dict[bytes, tuple[int, tuple[int, ...]]]:
  """TFDS shuffles a split's records: find each clip by its samples. -> {int16 bytes: (label, tags)}."""
  return {audio.tobytes(): (label, tags) for audio, label, tags in map(_clip, range(start, stop))}


def test_dataset_reads_as_a_probe_task(data_dir):
  from alp_jax.evaluate import tfds_tasks
  task = tfds_tasks.read_tfds_task(NAME, data_dir=data_dir, log=None)
  assert task.directory == data_dir / NAME / "1.0.0"
  assert task.classes == ["low", "high"] and task.metric == "accuracy"
  assert {split: len(examples) for split, examples in task.splits.items()} == {"train": 12, "valid": 4, "test": 8}
  starts = {"train": 0, "valid": 12, "test": 16, "end": 24}
  for split, stop in (("train", "valid"), ("valid", "test"), ("test", "end")):
    clips = _clips_by_audio(starts[split], starts[stop])
    targets = []
    for example in task.splits[split]:
      samples, rate = example.audio.load()
      assert rate == RATE and samples.dtype == np.float32
      label, _ = clips.pop(np.round(samples * 32768.0).astype(np.int16).tobytes())   # each clip exactly once
      assert example.labels == (("low", "high")[label],)
      targets.append(label)
    assert not clips
    np.testing.assert_array_equal(task.targets(task.splits[split]), targets)
  # The same samples stored as a float Tensor: the rate must be given, then the clips are the same.
  with pytest.raises(tfds_tasks.TfdsTaskError, match="--tfds-sample-rate"):
    tfds_tasks.read_tfds_task(NAME, data_dir=data_dir, audio_key="samples", log=None)
  as_tensor = tfds_tasks.read_tfds_task(f"{NAME}:1.0.0", data_dir=data_dir, audio_key="samples", sample_rate=RATE,
                                        log=None)
  for a, b in zip(task.splits["test"], as_tensor.splits["test"]):
    np.testing.assert_allclose(a.audio.load()[0], b.audio.load()[0], atol=1e-6)
    assert a.audio.key != b.audio.key   # another feature: another cache entry
  # Sequence(ClassLabel) is multi-label (mAP); split expressions map TFDS splits onto task splits.
  tags = tfds_tasks.read_tfds_task(NAME, data_dir=data_dir, label_key="tags", log=None,
                                   splits=tfds_tasks.parse_split_map("train=train[:75%],test=train[75%:]"))
  assert tags.metric == "map" and tags.classes == ["low", "high", "odd"]
  assert {split: len(examples) for split, examples in tags.splits.items()} == {"train": 9, "test": 3}
  clips = _clips_by_audio(0, 12)
  for example in tags.splits["train"] + tags.splits["test"]:
    _, clip_tags = clips.pop(np.round(example.audio.load()[0] * 32768.0).astype(np.int16).tobytes())
    assert example.labels == tuple(sorted(tags.classes[i] for i in clip_tags))
  assert not clips
  multi_hot = tags.targets(tags.splits["test"])
  assert multi_hot.shape == (3, 3) and (multi_hot.sum(axis=1) >= 1).all()


def test_cli_probe_is_well_above_chance_and_cached(tmp_path, data_dir, encoder_dir, capsys):
  from alp_jax.evaluate import embed, tfds_tasks
  from alp_jax.evaluate.__main__ import main
  args = ["--encoder", str(encoder_dir), "--tfds", NAME, "--tfds-data-dir", str(data_dir), "--pooling", "mean",
          "--cache-dir", str(tmp_path / "cache")]
  assert main([*args, "--out", str(tmp_path / "a.json")]) == 0
  assert "[tfds] tone_task" in capsys.readouterr().out
  [row] = json.loads((tmp_path / "a.json").read_text())["results"]
  assert row["task"] == NAME and row["metric"] == "accuracy" and row["skipped_files"] == 0
  assert row["probe"]["num_test"] == 8 and row["probe"]["num_valid"] == 4 and row["probe"]["num_fit"] == 12
  assert row["value"] >= 0.85, row   # chance is 0.5: at most one of the 8 test clips wrong
  assert main([*args, "--out", str(tmp_path / "b.json")]) == 0
  [again] = json.loads((tmp_path / "b.json").read_text())["results"]
  assert again["embed_seconds"] == 0.0 and again["value"] == row["value"]
  assert len(list((tmp_path / "cache").glob("*/train.pooled"))) == 1   # mean pooling stores no frames
  assert not list((tmp_path / "cache").glob("*/*.frames"))
  # The cache key follows the data: another sample rate or another split mapping is another entry.
  fingerprint = lambda **kw: embed._files_fingerprint(tfds_tasks.read_tfds_task(NAME, data_dir=data_dir, log=None,
                                                                                 **kw))
  base = fingerprint()
  assert fingerprint(sample_rate=16000) != base
  assert fingerprint(splits={"train": "train", "test": "validation"}) != base
  assert fingerprint() == base


def test_missing_or_unreadable_datasets_are_clear_errors(tmp_path, data_dir, encoder_dir, capsys):
  from alp_jax.evaluate.__main__ import main

  def error(*args) -> str:
    assert main(["--encoder", str(encoder_dir), *args, "--out", str(tmp_path / "o.json")]) == 2
    return capsys.readouterr().err

  message = error("--tfds", "no_such_set", "--tfds-data-dir", str(data_dir))
  assert "no_such_set" in message and str(data_dir) in message and "tone_task" in message   # what is there
  message = error("--tfds", NAME, "--tfds-data-dir", str(tmp_path / "absent"))
  assert NAME in message and str(tmp_path / "absent") in message and "does not exist" in message
  message = error("--tfds", f"{NAME}:9.9.9", "--tfds-data-dir", str(data_dir))
  assert "9.9.9" in message and "1.0.0" in message
  message = error("--tfds", NAME, "--tfds-data-dir", str(data_dir), "--tfds-split", "test=nope")
  assert "'nope'" in message and "train, validation, test" in message.replace("'", "")
  # Prepared as tfrecord (TFDS's default), or with lazily encoded Audio: both need TensorFlow; say what to do.
  other = tmp_path / "other"
  shutil.copytree(data_dir / NAME, other / NAME)
  info_path = other / NAME / "1.0.0" / "dataset_info.json"
  info_path.write_text(info_path.read_text().replace('"array_record"', '"tfrecord"'))
  message = error("--tfds", NAME, "--tfds-data-dir", str(other))
  assert "tfrecord" in message and "--file_format=array_record" in message
  info_path.write_text(info_path.read_text().replace('"tfrecord"', '"array_record"'))
  _set_audio_feature(other / NAME / "1.0.0", "audio", dtype="int64", sample_rate=RATE, lazy_decode=True,
                     file_format="flac")
  message = error("--tfds", NAME, "--tfds-data-dir", str(other))
  assert "lazily" in message and "int16 Tensor" in message and "Traceback" not in message
