"""Evaluation CLI end to end on a tiny random-weight encoder: mixed rates/channels, a corrupt file,
determinism, --random-init from an encoder folder and from a config."""
import csv
import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from conftest import load_config  # encoder_dir: the shared fixture in conftest.py

RATES = (8000, 16000, 44100)
CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
  """Two classes (low tone vs. high tone in noise), files at 8, 16 and 44.1 kHz, some stereo, one corrupt."""
  out = tmp_path_factory.mktemp("task")
  (out / "audio").mkdir()
  rng = np.random.default_rng(0)
  rows = {"train": [], "test": []}
  for i in range(24):
    label = ("low", "high")[i % 2]
    rate = RATES[i % 3]
    seconds = 0.6 + 0.1 * (i % 5)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * (300.0 if label == "low" else 2400.0) * t)
    audio = (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    if i % 4 == 1:
      audio = np.stack([audio, 0.5 * audio], axis=1)   # stereo
    name = f"audio/clip{i:02d}.{'flac' if i % 5 == 0 else 'wav'}"
    sf.write(out / name, audio, rate)
    rows["test" if i >= 16 else "train"].append((name, label))
  (out / "audio" / "broken.wav").write_bytes(b"RIFF not really a wave file")
  rows["train"].append(("audio/broken.wav", "low"))
  for split, split_rows in rows.items():
    with open(out / f"{split}.csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["path", "label"])
      writer.writerows(split_rows)
  return out


def _run(tmp_path, name, *args):
  from alp_jax.evaluate.__main__ import main
  out = tmp_path / f"{name}.json"
  assert main([*args, "--out", str(out)]) == 0
  return json.loads(out.read_text())


def test_encoder_twice_is_identical_and_skips_corrupt(tmp_path, encoder_dir, task_dir, capsys):
  first = _run(tmp_path, "a", "--encoder", str(encoder_dir), "--task-dir", str(task_dir), "--pooling", "both")
  printed = capsys.readouterr().out
  second = _run(tmp_path, "b", "--encoder", str(encoder_dir), "--task-dir", str(task_dir), "--pooling", "both")
  assert [r["value"] for r in first["results"]] == [r["value"] for r in second["results"]]
  assert [r["probe"] for r in first["results"]] == [r["probe"] for r in second["results"]]
  assert [r["method"] for r in first["results"]] == ["mean", "attention"]
  for row in first["results"]:
    assert row["metric"] == "accuracy" and 0.0 <= row["value"] <= 1.0
    assert row["skipped_files"] == 1 and row["skipped"][0].endswith("broken.wav")
    assert row["probe"]["num_fit"] + row["probe"]["num_valid"] == 16   # 17 train rows, one corrupt
    assert row["probe"]["num_test"] == 8
  assert "broken.wav" in printed and "accuracy" in printed
  protocol = first["protocol"]
  assert protocol["encoder"]["step"] == 7 and protocol["window_seconds"] == 1.0
  assert protocol["probe"]["learning_rates"] == [1e-3, 1e-2] and protocol["seed"] == 0


def test_cache_reuses_embeddings(tmp_path, encoder_dir, task_dir):
  args = ("--encoder", str(encoder_dir), "--task-dir", str(task_dir), "--pooling", "mean",
          "--cache-dir", str(tmp_path / "cache"))
  first = _run(tmp_path, "c1", *args)
  second = _run(tmp_path, "c2", *args)
  assert len(list((tmp_path / "cache").glob("*/train.pooled"))) == 1
  assert second["results"][0]["embed_seconds"] == 0.0
  assert first["results"][0]["value"] == second["results"][0]["value"]


def test_random_init_from_folder_and_config_build_the_same_architecture(tmp_path, encoder_dir, task_dir):
  import jax
  from alp_jax.evaluate.__main__ import load_encoder
  from_folder, info = load_encoder(random_init=str(encoder_dir), seed=5)
  trained, _ = load_encoder(encoder=str(encoder_dir))
  from_config, _ = load_encoder(random_init=f"{CONFIGS}/clap.py:tiny", seed=5)
  shapes = lambda e: jax.tree.map(np.shape, e.encoder_params_pure())
  assert shapes(from_folder) == shapes(trained) == shapes(from_config)
  assert info["kind"] == "random_init"
  differs = jax.tree.map(lambda a, b: not np.array_equal(a, b), from_folder.encoder_params_pure(),
                         trained.encoder_params_pure())
  assert any(jax.tree.leaves(differs))   # fresh weights, not the exported ones
  result = _run(tmp_path, "r", "--random-init", str(encoder_dir), "--task-dir", str(task_dir), "--pooling", "mean")
  assert result["protocol"]["encoder"]["kind"] == "random_init"


def test_baseline_runs_probes_only_with_intervals_and_says_why_the_rest_is_skipped(tmp_path, task_dir,
                                                                                   caption_task_dir, capsys):
  result = _run(tmp_path, "base", "--baseline", "logmel-stats", "--task-dir", str(task_dir), "--task-dir",
                str(caption_task_dir), "--suite", "all", "--pooling", "both")
  printed = capsys.readouterr().out
  assert [(r["task"], r["method"]) for r in result["results"]] == [(task_dir.name, "mean"),
                                                                   (task_dir.name, "attention")]
  for row in result["results"]:
    low, high = row["interval"]
    assert low <= row["value"] <= high and row["skipped_files"] == 1 and row["probe"]["num_test"] == 8
  assert result["results"][0]["value"] >= 0.75   # low vs high tone: the clip's mean log-mel tells them apart
  protocol = result["protocol"]
  assert protocol["encoder"]["kind"] == "baseline" and protocol["encoder"]["baseline"] == "logmel-stats"
  assert protocol["frontend"]["num_mel_bins"] == 80 and protocol["evaluations"] == ["probe"]
  assert "delta" in protocol["embedding"] and "bootstrap" in protocol["interval"]
  assert "lit: skipped, needs an audio encoder" in printed
  assert "retrieval: skipped, needs --workdir of a run with a audio encoder and caption decoder or text tower" in printed
  assert "output width 160" in printed and "[" in printed.splitlines()[-3]   # the table shows the interval


def test_missing_task_file_is_a_clear_error(tmp_path, encoder_dir, capsys):
  from alp_jax.evaluate.__main__ import main
  (tmp_path / "train.csv").write_text("path,label\na.wav,x\n")
  assert main(["--encoder", str(encoder_dir), "--task-dir", str(tmp_path), "--out", str(tmp_path / "o.json")]) == 2
  assert "test.csv is missing" in capsys.readouterr().err


def test_demo_tasks_are_balanced_disjoint_and_compare_prints_one_table(tmp_path, encoder_dir):
  from alp_jax import encoder_api
  from alp_jax.demo import sysdeps
  from alp_jax.demo import tasks as demo_tasks
  from alp_jax.evaluate import tasks
  try:
    task_dirs = demo_tasks.build_demo_tasks(tmp_path / "demo", clips_per_task=24, seed=1000, quiet=True)
  except sysdeps.MissingSystemPackage as e:
    pytest.skip(str(e))
  assert sorted(task_dirs) == sorted(demo_tasks.TASKS)
  plan = {c["file"]: c for c in demo_tasks.plan(24, 1000)}
  for name, task_dir in task_dirs.items():
    task = tasks.read_task(task_dir)
    train = {e.path for e in task.splits["train"]}
    test = {e.path for e in task.splits["test"]}
    assert not train & test and all(p.exists() for p in train | test)
    assert {e.labels[0] for e in task.splits["test"]} == set(task.classes)   # every class is tested
    for example in task.splits["train"] + task.splits["test"]:
      clip = plan[f"audio/{example.path.name}"]
      assert clip["labels"][name] == example.labels[0]
  assert len(tasks.read_task(task_dirs["domain"]).classes) == 3
  # The caption task covers the same clips with the domain task's split, captions from each clip's attributes.
  from alp_jax.evaluate import caption_tasks
  captions = caption_tasks.read_caption_task(tmp_path / "demo" / demo_tasks.CAPTION_TASK)
  domain = tasks.read_task(task_dirs["domain"])
  assert [e.path for e in captions.splits["train"]] == [e.path for e in domain.splits["train"]]
  per_domain = {}
  for e in domain.splits["test"]:
    per_domain.setdefault(e.labels[0], []).append(e.path)
  assert sorted(e.path for e in captions.splits["test"]) == sorted(
      p for paths in per_domain.values() for p in paths[:demo_tasks.CAPTION_TEST_PER_DOMAIN])
  for example in captions.splits["test"]:
    clip = plan[f"audio/{example.path.name}"]
    assert 3 <= len(example.captions) <= 5
    if clip["attrs"]["domain"] == "music":
      assert any(clip["attrs"]["family"] in c.lower() or clip["attrs"]["instrument"].lower() in c.lower()
                 for c in example.captions), example.captions
  # Labels follow the rendered attributes: a pitch-class label is the root's class.
  music = [c for c in plan.values() if c["attrs"]["domain"] == "music"]
  for clip in music:
    assert clip["labels"]["pitch_class"] == ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#",
                                             "B")[clip["attrs"]["root"] % 12]
  # A fresh seed: no clip's attributes coincide with the pretraining corpus's default seed.
  assert demo_tasks.plan(12, 0) != demo_tasks.plan(12, 1000)
  encoder = encoder_api.AudioEncoder.load(encoder_dir)
  rows = demo_tasks.compare({"a": encoder, "b": encoder}, [task_dirs["domain"], task_dirs["speaker"]],
                            pooling=("mean",), log=None)
  assert [(r["task"], r["method"]) for r in rows] == [("domain", "mean"), ("speaker", "mean")]
  assert all(r["values"]["a"] == r["values"]["b"] for r in rows)
  table = demo_tasks.format_comparison(rows).splitlines()
  assert table[0].split()[-2:] == ["a", "b"] and len(table) == 3
  # A run's zero-shot rows join the table after the probe rows of the tasks named by caption words only.
  run = _tiny_run(tmp_path, "clap")[0]
  rows = demo_tasks.compare({"a": encoder}, [task_dirs["speaker"], task_dirs["domain"]], pooling=("mean",),
                            runs={"z": run}, log=None)
  assert [(r["task"], r["method"], sorted(r["values"])) for r in rows] == [
      ("speaker", "mean", ["a"]), ("domain", "mean", ["a"]), ("domain", "zero_shot", ["z"])]
  assert demo_tasks.format_comparison(rows).splitlines()[-1].split()[-2:] == ["-", f"{rows[-1]['values']['z']:.3f}"]


def _tiny_tokenizer(tmp_path):
  from alp_jax.data import tokenizer as tokenizer_lib
  words = ("low", "high", "tone", "sound", "the", "of", "a", "recording", "noise", "beep")
  rng = np.random.default_rng(0)
  (tmp_path / "captions.txt").write_text("\n".join(" ".join(rng.choice(words, 6)) for _ in range(300)) + "\n")
  return tokenizer_lib.Tokenizer(tokenizer_lib.train(tmp_path, vocab_size=40, quiet=True))


def _tiny_run(tmp_path, config_name: str, seed: int = 1):
  from flax import nnx
  from alp_jax import models
  from alp_jax.evaluate import run_model
  tok = _tiny_tokenizer(tmp_path)
  cfg = load_config(config_name, "tiny")
  cfg.data.crop_seconds = 1.0
  cfg.model.vocab_size = tok.vocab_size
  model = models.build_model(cfg, rngs=nnx.Rngs(seed))
  return run_model.RunModel(cfg, model, tok), model, tok, cfg


def _test_clips(task_dir):
  """The task's test clips (all shorter than the 1 s crop) as one padded window each, and their whole-clip frames."""
  from alp_jax.audio import io as audio_io
  from alp_jax.evaluate import tasks
  test = [e for e in tasks.read_task(task_dir).splits["test"]]
  audio, mask = np.zeros((len(test), 16000), np.float32), np.zeros((len(test), 16000), bool)
  for i, example in enumerate(test):
    clip = audio_io.load_audio(example.path)
    audio[i, :len(clip)], mask[i, :len(clip)] = clip, True
  return test, audio, mask


def test_zero_shot_embeddings_match_the_two_tower_forward(tmp_path, task_dir):
  import jax.numpy as jnp
  from alp_jax.audio import io as audio_io
  from alp_jax.evaluate import tasks, zero_shot
  run, model, tok, cfg = _tiny_run(tmp_path, "clap")
  [row] = zero_shot.evaluate_task(run, task_dir, log=None)
  assert row["method"] == "zero_shot" and row["metric"] == "accuracy" and 0.0 <= row["value"] <= 1.0
  # The run's memo holds every test clip: evaluating again encodes nothing.
  test_paths = {str(e.path) for e in tasks.read_task(task_dir).splits["test"]}
  assert set(run.embed_memo) == test_paths
  calls = []
  encode = run.encoder.encode_windows
  run.encoder.encode_windows = lambda *a, **k: calls.append(a) or encode(*a, **k)
  assert zero_shot.evaluate_task(run, task_dir, log=None) == [row] and not calls
  run.encoder.encode_windows = encode
  # Reference: the model's own evaluation forward, each test clip as one window.
  test, audio, mask = _test_clips(task_dir)
  expected_audio, _ = model.embed_audio(jnp.asarray(audio), jnp.asarray(mask))
  frames = [run.encoder.embed(*audio_io.decode(example.path))["frames"] for example in test]
  np.testing.assert_allclose(run.audio_embeddings(frames), np.asarray(expected_audio), atol=2e-4)
  tokens, token_mask = tok.encode_padded([t.format(label="low") for t in zero_shot.TEMPLATES],
                                         cfg.data.max_caption_tokens)
  prompts, _ = model.embed_text(jnp.asarray(tokens), jnp.asarray(token_mask))
  expected_class = np.asarray(prompts).mean(axis=0)
  np.testing.assert_allclose(zero_shot.class_embeddings(run, ["low", "high"])[0],
                             expected_class / np.linalg.norm(expected_class), atol=1e-5)
  # update() (what the in-training evaluators use) gives another model's numbers without rebuilding.
  from flax import nnx
  from alp_jax import models
  from alp_jax.evaluate import run_model
  other = models.build_model(cfg, rngs=nnx.Rngs(7))
  before = run.audio_embeddings(frames)
  run.update(nnx.state(other))
  assert not run.embed_memo   # frames of the old weights are gone
  fresh = run_model.RunModel(cfg, other, tok)
  np.testing.assert_array_equal(run.audio_embeddings(frames), fresh.audio_embeddings(frames))
  np.testing.assert_array_equal(run.text_embeddings(["low tone"]), fresh.text_embeddings(["low tone"]))
  np.testing.assert_array_equal(run.encoder.embed(*audio_io.decode(test[0].path))["frames"],
                                fresh.encoder.embed(*audio_io.decode(test[0].path))["frames"])
  assert not np.allclose(before, fresh.audio_embeddings(frames))


def test_captioner_likelihoods_and_greedy_match_the_decoder_on_the_model_frames(tmp_path, task_dir):
  import jax.numpy as jnp
  from alp_jax.audio import io as audio_io
  from alp_jax.evaluate import zero_shot
  from alp_jax.models import decoding
  run, model, tok, cfg = _tiny_run(tmp_path, "cappa")
  [row] = zero_shot.evaluate_task(run, task_dir, log=None)
  assert row["method"] == "zero_shot_likelihood" and 0.0 <= row["value"] <= 1.0
  test, audio, mask = _test_clips(task_dir)
  model_frames, out = model.encode_audio(jnp.asarray(audio), jnp.asarray(mask))
  frames = [run.encoder.embed(*audio_io.decode(example.path))["frames"] for example in test]
  texts = zero_shot.prompts("low") + ["high tone noise"]
  tokens, token_mask = tok.encode_padded(texts, cfg.data.max_caption_tokens)
  for i in range(len(test)):   # each clip alone, with the model's own frames, one text at a time
    one = model_frames[i:i + 1], out["frame_mask"][i:i + 1]
    expected = [float(decoding.score_captions(model.decoder, *one, jnp.asarray(tokens[j:j + 1]),
                                              jnp.asarray(token_mask[j:j + 1]))[0]) for j in range(len(texts))]
    np.testing.assert_allclose(run.log_likelihoods(frames[i:i + 1], texts)[0], expected, atol=2e-3, rtol=1e-4)
  scores = zero_shot.class_scores(run, frames, ["low", "high"], zero_shot.LIKELIHOOD)
  batched = run.log_likelihoods(frames, zero_shot.prompts("low") + zero_shot.prompts("high"))
  np.testing.assert_allclose(scores, batched.reshape(len(frames), 2, -1).mean(-1), rtol=1e-6)
  greedy = decoding.greedy_decode(model.decoder, *one, cfg.data.max_caption_tokens)[0]
  assert run.generate(frames[-1:]) == [tok.decode(np.asarray(greedy)[0])]


@pytest.fixture(scope="module")
def caption_task_dir(tmp_path_factory):
  from conftest import write_caption_task
  return write_caption_task(tmp_path_factory.mktemp("captions"), clips=18)


@pytest.fixture(scope="module")
def hybrid_workdir(tmp_path_factory, tiny_corpus_dir, task_dir, caption_task_dir):
  """A tiny hybrid run (text tower + decoder) of 2 steps whose in-training evaluators use the task folders."""
  import ml_collections
  from conftest import make_test_config
  from alp_jax.train import trainer
  cfg = make_test_config("hybrid", tiny_corpus_dir, total_steps=2, checkpoint_every=2, eval_every=2,
                         mesh__num_devices=1)
  cfg.evaluators.zs = ml_collections.ConfigDict(dict(type="zero_shot", task_dirs=(str(task_dir),)))
  cfg.evaluators.ret = ml_collections.ConfigDict(dict(type="retrieval", task_dirs=(str(caption_task_dir),)))
  cfg.evaluators.cap = ml_collections.ConfigDict(dict(type="captioning", task_dirs=(str(caption_task_dir),)))
  workdir = tmp_path_factory.mktemp("hybrid_run")
  trainer.train(cfg, workdir)
  return workdir


def test_text_side_of_a_run_in_training_and_from_the_cli_agree_and_repeat(tmp_path, hybrid_workdir, task_dir,
                                                                           caption_task_dir, capsys):
  rows = [json.loads(line) for line in open(hybrid_workdir / "metrics.jsonl")]
  logged = {k: v for r in rows if r["split"] == "eval" for k, v in r.items() if "/" in k}
  args = ["--workdir", str(hybrid_workdir), "--task-dir", str(task_dir), "--task-dir", str(caption_task_dir),
          "--pooling", "mean", "--beam-sizes", "1,2"]
  first = _run(tmp_path, "first", *args)
  table = capsys.readouterr().out
  methods = {row["method"] for row in first["results"]}
  assert methods == {"mean", "zero_shot", "zero_shot_likelihood", "retrieval", "retrieval_likelihood", "greedy",
                     "beam2"}
  caption_task = caption_task_dir.name
  retrieval = {(r["method"], r["metric"]): r["value"] for r in first["results"] if r["task"] == caption_task}
  n_test = sum(1 for _ in open(caption_task_dir / "test.jsonl"))
  for direction in ("a2t", "t2a"):
    recalls = [retrieval[("retrieval", f"{direction}/R@{k}")] for k in (1, 5, 10)]
    assert recalls == sorted(recalls) and all(0.0 <= r <= 1.0 for r in recalls)
    # n_test clips: R@n_test audio->text and text->audio find every clip
  assert all(0.0 <= retrieval[("greedy", m)] <= 1.0 for m in ("BLEU-1", "BLEU-4", "ROUGE-L"))
  [examples] = [r["examples"] for r in first["results"] if r["method"] == "greedy" and r["metric"] == "ROUGE-L"]
  assert len(examples) == min(8, n_test) and all(e["references"] for e in examples)
  assert "a2t/mAP@10" in table and "zero_shot_likelihood" in table
  # The in-training evaluators at the last step logged the CLI's numbers for the same checkpoint.
  assert logged[f"ret/{caption_task}/t2a/R@1"] == pytest.approx(retrieval[("retrieval", "t2a/R@1")], abs=1e-6)
  assert logged[f"cap/{caption_task}/greedy/ROUGE-L"] == pytest.approx(retrieval[("greedy", "ROUGE-L")], abs=1e-6)
  zero = {r["method"]: r["value"] for r in first["results"] if r["task"] == task_dir.name and "zero" in r["method"]}
  assert logged[f"zs/{task_dir.name}"] == pytest.approx(zero["zero_shot"], abs=1e-6)
  # Determinism: the same checkpoint again gives identical numbers.
  second = _run(tmp_path, "second", *args, "--suite", "zero_shot,retrieval,captioning")
  again = {(r["task"], r["method"], r["metric"]): r["value"] for r in second["results"]}
  assert again == {(r["task"], r["method"], r["metric"]): r["value"] for r in first["results"]
                   if r["method"] != "mean"}


def test_text_evaluations_of_an_encoder_are_refused_clearly(tmp_path, encoder_dir, caption_task_dir, capsys):
  from alp_jax.evaluate.__main__ import main
  out = str(tmp_path / "o.json")
  assert main(["--encoder", str(encoder_dir), "--task-dir", str(caption_task_dir), "--suite", "retrieval",
               "--out", out]) == 2
  assert "needs --workdir" in capsys.readouterr().err
  (caption_task_dir.parent / "bad").mkdir()
  (caption_task_dir.parent / "bad" / "test.jsonl").write_text('{"audio": "x.wav", "captions": []}\n')
  assert main(["--encoder", str(encoder_dir), "--task-dir", str(caption_task_dir.parent / "bad"), "--out", out]) == 2
  err = capsys.readouterr().err
  assert "test.jsonl:1" in err and "captions" in err
