"""Sound event detection: SED task folders (reading and every error), the PSDS1 / event-F1 wrapper against
sed_scores_eval called directly and against hand-computed values, the frame probe on synthetic frames, and the
`sed` evaluation end to end on tone bursts with the log-mel baseline."""
import json

import numpy as np
import pytest

from alp_jax.evaluate import sed_metrics
from alp_jax.evaluate import sed_probe
from alp_jax.evaluate import sed_tasks

HEADER = "filename\tonset\toffset\tevent_label\n"


def _write(folder, name, text):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / name).write_text(text)


# ---------------------------------------------------------------------------------------------------------------
# Task folders.

def test_read_sed_task_merges_events_and_resolves_audio(tmp_path):
  _write(tmp_path, "train.tsv", HEADER + "a.wav\t0.5\t1.0\tdog\na.wav\t0.9\t1.5\tdog\na.wav\t1.5\t2.0\tdog\n"
                                         "a.wav\t0.0\t0.2\tcat\nb.wav\t\t\t\n")
  _write(tmp_path, "test.tsv", "event_label\tfilename\toffset\tonset\n" + "speech\tc.wav\t3\t1\n")
  _write(tmp_path, "task.json", json.dumps({"audio_dir": {"train": "audio/train", "test": "/abs/test"}}))
  task = sed_tasks.read_sed_task(tmp_path)
  assert task.classes == ["cat", "dog", "speech"]
  a, b = task.splits["train"]
  # Overlapping and touching "dog" events merge into one; events sort by (label, onset).
  assert a.events == (sed_tasks.Event(0.0, 0.2, "cat"), sed_tasks.Event(0.5, 2.0, "dog"))
  assert a.path == tmp_path / "audio/train/a.wav" and b.events == ()
  assert task.splits["test"][0].path.as_posix() == "/abs/test/c.wav"
  assert task.splits["test"][0].events == (sed_tasks.Event(1.0, 3.0, "speech"),)   # columns in any order
  assert "valid" not in task.splits
  probe_task = task.as_probe_task()
  assert [e.labels for e in probe_task.splits["train"]] == [("cat", "dog"), (sed_tasks.NO_EVENT,)]
  assert a.clipped(1.0) == (sed_tasks.Event(0.0, 0.2, "cat"), sed_tasks.Event(0.5, 1.0, "dog"))
  assert a.clipped(0.5) == (sed_tasks.Event(0.0, 0.2, "cat"),)


def test_frame_targets_use_frame_centres():
  events = [sed_tasks.Event(0.1, 0.3, "b"), sed_tasks.Event(0.26, 1.0, "a")]
  targets = sed_tasks.frame_targets(events, ["a", "b"], num_frames=10, duration=1.0)   # centres .05, .15, ...
  assert targets[:, 1].tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
  assert targets[:, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("train, test, spec, message", [
    (HEADER + "a.wav\t0\t1\tdog\n", None, None, "test.tsv is missing"),
    ("filename\tstart\toffset\tevent_label\n", HEADER + "b.wav\t0\t1\tdog\n", None, "missing ['onset']"),
    (HEADER + "a.wav\t0\tone\tdog\n", HEADER + "b.wav\t0\t1\tdog\n", None, "train.tsv:2: offset 'one'"),
    (HEADER + "a.wav\t0\t1\tdog\na.wav\t2\t2\tdog\n", HEADER + "b.wav\t0\t1\tdog\n", None, "train.tsv:3: needs 0 <="),
    (HEADER + "a.wav\t-1\t1\tdog\n", HEADER + "b.wav\t0\t1\tdog\n", None, "train.tsv:2: needs 0 <="),
    (HEADER + "a.wav\t0\t1\t\n", HEADER + "b.wav\t0\t1\tdog\n", None, "train.tsv:2: empty event_label"),
    (HEADER + "\t0\t1\tdog\n", HEADER + "b.wav\t0\t1\tdog\n", None, "train.tsv:2: empty filename"),
    (HEADER + "a.wav\t0\t1\tdog\textra\n", HEADER + "b.wav\t0\t1\tdog\n", None, "train.tsv:2: 5 tab-separated"),
    (HEADER + "a.wav\t0\t1\tdog\n", HEADER + "a.wav\t0\t1\tdog\n", None, "in both train.tsv and test.tsv"),
    (HEADER + "a.wav\t0\t1\tdog\n", HEADER + "b.wav\t0\t1\tcat\n", {"classes": ["dog"]}, "labels ['cat']"),
    (HEADER + "a.wav\t0\t1\tdog\n", HEADER + "b.wav\t0\t1\tdog\n", {"audio_dir": 3}, "\"audio_dir\" must be"),
    (HEADER, HEADER + "b.wav\t0\t1\tdog\n", None, "train.tsv: no rows"),
    (HEADER + "a.wav\t\t\t\n", HEADER + "b.wav\t\t\t\n", None, "no events in any split"),
])
def test_read_sed_task_errors_name_file_and_line(tmp_path, train, test, spec, message):
  _write(tmp_path, "train.tsv", train)
  if test is not None:
    _write(tmp_path, "test.tsv", test)
  if spec is not None:
    _write(tmp_path, "task.json", json.dumps(spec))
  with pytest.raises(sed_tasks.TaskFormatError, match=None) as error:
    sed_tasks.read_sed_task(tmp_path)
  assert message in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Metrics: the wrapper against the library called directly, and against hand-computed values.

def _one_class_case(shift: float = 0.0):
  """Ten 36 s clips at 1 s frames (360 s, 0.1 h), one class; clip x0 holds events [2, 5) and [10, 14)."""
  posteriors = {f"x{i}": np.zeros((36, 1)) for i in range(10)}
  events = {clip: [] for clip in posteriors}
  events["x0"] = [(2.0, 5.0, "a"), (10.0, 14.0, "a")]
  durations = {clip: 36.0 for clip in posteriors}
  return posteriors, events, durations


def test_psds1_and_f1_by_hand():
  posteriors, events, durations = _one_class_case()
  posteriors["x0"][2:5, 0] = 0.9      # hits [2, 5)
  posteriors["x0"][20:23, 0] = 0.8    # a false alarm
  posteriors["x0"][10:14, 0] = 0.7    # hits [10, 14)
  result = sed_metrics.evaluate(posteriors, events, durations, ["a"], resamples=0)
  # PSD-ROC: TPR 0.5 at 0 FP/h, TPR 1 from 1 FP / 0.1 h = 10 FP/h on; area to 100 FP/h, normalised:
  # (0.5 * 10 + 1.0 * 90) / 100. One class: the alpha_st * std term is 0.
  assert result["psds1"] == pytest.approx(0.95)
  # At threshold 0.5 all three detections count: TP 2, FP 1 -> P 2/3, R 1, F1 0.8.
  assert result["event_f1"] == pytest.approx(0.8)
  assert (result["num_clips"], result["num_events"], result["hours"]) == (10, 2, pytest.approx(0.1))


def test_perfect_detections_score_one_and_shifted_detections_zero():
  posteriors, events, durations = _one_class_case()
  posteriors["x0"][2:5, 0] = posteriors["x0"][10:14, 0] = 1.0
  perfect = sed_metrics.evaluate(posteriors, events, durations, ["a"], resamples=20)
  assert (perfect["psds1"], perfect["event_f1"]) == (1.0, 1.0)
  assert perfect["psds1_interval"] == [1.0, 1.0]
  shifted, _, _ = _one_class_case()
  shifted["x0"][4:7, 0] = shifted["x0"][13:17, 0] = 1.0   # 2-3 s late: under 70% overlap, beyond the collars
  result = sed_metrics.evaluate(shifted, events, durations, ["a"], resamples=0)
  assert (result["psds1"], result["event_f1"]) == (0.0, 0.0)


def test_macro_f1_and_instability_penalty_by_hand():
  # Class a: both events found. Class b: one of two found, no false alarm -> P 1, R 1/2, F1 2/3.
  posteriors, _, durations = _one_class_case()
  posteriors = {clip: np.zeros((36, 2)) for clip in posteriors}
  events = {clip: [] for clip in posteriors}
  events["x0"] = [(2.0, 5.0, "a"), (10.0, 14.0, "a"), (20.0, 22.0, "b")]
  events["x1"] = [(5.0, 9.0, "b")]
  posteriors["x0"][2:5, 0] = posteriors["x0"][10:14, 0] = posteriors["x0"][20:22, 1] = 1.0
  result = sed_metrics.evaluate(posteriors, events, durations, ["a", "b"], resamples=0)
  assert result["event_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
  # PSDS1: per-class TPR 1 and 1/2 at every eFPR: mean 0.75 minus alpha_st (1) times their std (0.25).
  assert result["psds1"] == pytest.approx(0.5)


def test_wrapper_equals_sed_scores_eval_called_directly():
  sed_scores_eval = pytest.importorskip("sed_scores_eval")
  from sed_scores_eval.base_modules.scores import create_score_dataframe
  rng = np.random.default_rng(0)
  classes, posteriors, events, durations = ["alarm", "dog", "speech"], {}, {}, {}
  for i in range(12):
    clip, frames, seconds = f"clip{i}", 100 + 10 * (i % 3), 4.0 + i % 3
    found = [(0.4 + 0.1 * i % 1.0, 1.6 + 0.1 * (i % 5), classes[i % 3]), (2.5, 3.5, classes[(i + 1) % 3])]
    scores = rng.uniform(0.0, 0.4, (frames, 3))
    for onset, offset, label in found:
      start, stop = int(onset / seconds * frames), int(offset / seconds * frames)
      scores[start:stop, classes.index(label)] += rng.uniform(0.1, 0.6)
    posteriors[clip], events[clip], durations[clip] = scores, found, seconds
  ours = sed_metrics.evaluate(posteriors, events, durations, classes, resamples=0)
  frames = {clip: create_score_dataframe(s, np.linspace(0.0, durations[clip], len(s) + 1), classes)
            for clip, s in posteriors.items()}
  psds, *_ = sed_scores_eval.intersection_based.psds(
      frames, events, durations, dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0,
      alpha_st=1.0, unit_of_time="hour", max_efpr=100.0)
  f1, *_ = sed_scores_eval.collar_based.fscore(frames, events, 0.5, onset_collar=0.2, offset_collar=0.2,
                                               offset_collar_rate=0.2)
  assert 0.0 < psds < 1.0 and 0.0 < f1["macro_average"] < 1.0
  assert ours["psds1"] == pytest.approx(psds, abs=1e-12)
  assert ours["event_f1"] == pytest.approx(f1["macro_average"], abs=1e-12)
  # The bootstrap's F1 from per-clip counts (each clip scored alone) sums back to the library's F1 on all clips.
  clips = sorted(frames)
  counts = sed_metrics.event_f1_counts(frames, events, clips, classes)   # (N,C,3)
  assert counts[..., 2].sum() == sum(len(v) for v in events.values())
  assert sed_metrics.macro_f1_from_counts(counts.sum(axis=0)) == pytest.approx(f1["macro_average"], abs=1e-12)


def test_bootstrap_interval_brackets_value_and_is_seeded():
  posteriors, events, durations = _one_class_case()
  for i in range(10):
    events[f"x{i}"] = [(2.0, 5.0, "a")]
    posteriors[f"x{i}"][2:5, 0] = 0.9 if i % 2 else 0.3
    posteriors[f"x{i}"][20:22, 0] = 0.6
  a = sed_metrics.evaluate(posteriors, events, durations, ["a"], resamples=50, seed=1)
  b = sed_metrics.evaluate(posteriors, events, durations, ["a"], resamples=50, seed=1)
  assert a == b
  for metric in ("psds1", "event_f1"):
    low, high = a[f"{metric}_interval"]
    assert low <= a[metric] <= high and low < high


# ---------------------------------------------------------------------------------------------------------------
# Frame probe.

def _synthetic_clips(rng, count, width=8, frames=500, seconds=20.0, informative=True):
  """20 s clips of 500 frames (25 Hz) with one 'beep' and one 'knock' event each; informative frames carry their active
  classes in two feature dimensions plus noise, uninformative ones are noise only. (Clips are long so that one
  false alarm in 10 test clips is 18 per hour, well inside PSDS1's 100 per hour.)"""
  clips = []
  for i in range(count):
    beep_on = rng.uniform(0.0, 10.0)
    knock_on = rng.uniform(2.0, 12.0)
    events = (sed_tasks.Event(beep_on, beep_on + 6.0, "beep"), sed_tasks.Event(knock_on, knock_on + 5.0, "knock"))
    targets = sed_tasks.frame_targets(events, ["beep", "knock"], frames, seconds)   # (T,2)
    features = rng.normal(size=(frames, width)).astype(np.float32)
    if informative:
      features[:, :2] += 8.0 * targets
    clips.append(sed_probe.FrameClip(id=f"c{i}", frames=features, duration=seconds, events=events))
  return clips


def test_frame_probe_learns_synthetic_events_and_noise_stays_low():
  config = sed_probe.SedProbeConfig(learning_rates=(1e-2,), weight_decays=(0.0,), min_steps=600, epochs=1,
                                    batch_size=256, interval_resamples=0)
  rng = np.random.default_rng(0)
  learned = sed_probe.train_and_evaluate(_synthetic_clips(rng, 24), _synthetic_clips(rng, 10), ["beep", "knock"],
                                         config=config)
  noise = sed_probe.train_and_evaluate(_synthetic_clips(rng, 24, informative=False),
                                       _synthetic_clips(rng, 10, informative=False), ["beep", "knock"], config=config)
  assert learned["psds1"] > 0.8 and learned["event_f1"] > 0.8
  assert noise["psds1"] < 0.2 and noise["event_f1"] < 0.3
  assert learned["num_fit"] + learned["num_valid"] == 24 and learned["num_test"] == 10
  assert learned["test_posteriors"]["c0"].shape == (500, 2)


# ---------------------------------------------------------------------------------------------------------------
# The `sed` evaluation end to end: tone bursts, the log-mel baseline's 25 Hz frames, the CLI.

TONES = {"beep": 1000.0, "whistle": 3000.0}


def write_sed_task(out, train: int = 12, test: int = 6, seconds: float = 8.0, seed: int = 0):
  """A SED task folder: noisy clips with one or two 1-2 s tone bursts (1 kHz "beep", 3 kHz "whistle") each; one
  train clip has no event. Returns out."""
  import soundfile as sf
  rng = np.random.default_rng(seed)
  (out / "audio").mkdir(parents=True, exist_ok=True)
  rate = 16000
  for split, count in (("train", train), ("test", test)):
    rows = []
    for i in range(count):
      name = f"{split}_{i:02d}.wav"
      audio = 0.01 * rng.standard_normal(int(seconds * rate))
      labels = [] if (split == "train" and i == 0) else list(TONES)[:1 + i % 2] if i % 3 else ["whistle"]
      for label in labels:
        onset = round(rng.uniform(0.2, seconds - 2.5), 2)
        offset = round(onset + rng.uniform(1.0, 2.0), 2)
        t = np.arange(int(onset * rate), int(offset * rate))
        audio[t] += 0.3 * np.sin(2 * np.pi * TONES[label] * t / rate)
        rows.append(f"{name}\t{onset}\t{offset}\t{label}\n")
      if not labels:
        rows.append(f"{name}\t\t\t\n")
      sf.write(out / "audio" / name, audio.astype(np.float32), rate)
    (out / f"{split}.tsv").write_text(HEADER + "".join(rows))
  (out / "task.json").write_text(json.dumps({"audio_dir": "audio"}))
  return out


def test_sed_folders_are_their_own_task_kind_and_other_folders_are_refused(tmp_path, capsys, monkeypatch):
  from alp_jax.evaluate import evaluator
  from alp_jax.evaluate.__main__ import main, suites
  assert "sed" in suites()["study"] and "sed" in suites()["default"]
  _write(tmp_path / "sed", "train.tsv", HEADER + "a.wav\t0\t1\tdog\n")
  _write(tmp_path / "sed", "test.tsv", HEADER + "b.wav\t0\t1\tdog\n")
  found = evaluator.read_tasks([tmp_path / "sed"])
  assert [t.name for t in found[evaluator.SED]] == ["sed"] and not found[evaluator.PROBE]
  # A probe task folder with the SED evaluation named directly is refused, naming what a SED task holds.
  _write(tmp_path / "probe", "train.csv", "path,label\na.wav,x\n")
  _write(tmp_path / "probe", "test.csv", "path,label\nb.wav,x\n")
  assert main(["--baseline", "logmel-stats", "--task-dir", str(tmp_path / "probe"), "--suite", "sed",
               "--out", str(tmp_path / "o.json")]) == 2
  assert "test.tsv: filename, onset, offset, event_label" in capsys.readouterr().err
  # Without sed_scores_eval the metrics say what to install.
  monkeypatch.setitem(__import__("sys").modules, "sed_scores_eval", None)
  with pytest.raises(sed_metrics.MissingSedLibrary, match=r"alp_jax\[sed\]"):
    sed_metrics.library()


@pytest.mark.slow
def test_sed_suite_on_tone_bursts_from_the_cli(tmp_path, capsys):
  from alp_jax.evaluate.__main__ import main
  task_dir = write_sed_task(tmp_path / "tones")
  out = tmp_path / "results.json"
  assert main(["--baseline", "logmel-stats", "--task-dir", str(task_dir), "--suite", "sed", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  rows = {row["metric"]: row for row in result["results"]}
  assert set(rows) == {"psds1", "event_f1"} and all(r["method"] == "frame_linear" for r in rows.values())
  # Pure tones in faint noise: a linear read-out of log-mel frames finds them.
  assert rows["psds1"]["value"] > 0.5 and rows["event_f1"]["value"] > 0.5
  for row in rows.values():
    low, high = row["interval"]
    assert low <= row["value"] <= high
    assert row["num_classes"] == 2 and row["probe"]["num_test"] == 6 and row["probe"]["scored_classes"] == 2
  assert result["protocol"]["sed"]["psds1"]["dtc_threshold"] == 0.7
  assert "[sed] tones frame_linear: psds1" in capsys.readouterr().out


def test_demo_sed_task_labels_where_the_events_were_placed(tmp_path):
  import shutil
  import soundfile as sf
  from alp_jax.demo import sed_task
  if shutil.which("sox") is None:
    pytest.skip("needs sox (make sysdeps)")
  out = sed_task.build_demo_sed_task(tmp_path / "sed", clips=4, seed=5, workers=2, quiet=True)
  task = sed_tasks.read_sed_task(out)
  assert task.classes == sorted(sed_task.EVENT_CLASSES)
  assert sum(len(clips) for clips in task.splits.values()) == 4 and len(task.splits["test"]) == 1
  for clip in task.splits["train"] + task.splits["test"]:
    audio, rate = sf.read(clip.path)
    assert rate == 16000 and len(audio) == 8 * 16000 and clip.events
    inside = np.zeros(len(audio), bool)
    for event in clip.events:
      inside[int(event.onset * rate):int(event.offset * rate)] = True
    # The labelled spans are where the sound is: the background sits 15-25 dB under the events.
    assert np.sqrt(np.mean(audio[inside] ** 2)) > 3 * np.sqrt(np.mean(audio[~inside] ** 2))
  again = sed_task.build_demo_sed_task(tmp_path / "sed", clips=4, seed=5, quiet=True)   # reused, same labels
  assert (again / "test.tsv").read_text() == (out / "test.tsv").read_text()
