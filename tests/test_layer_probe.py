"""Per-layer probe hook: AudioEncoder layers (at_layer, embed_layers, load/build layer=), fingerprints, --layer."""
import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from conftest import tiny_encoder_meta, write_encoder_dir

from alp_jax import encoder_api
from alp_jax.audio import frontend
from alp_jax.evaluate import embed as embed_lib

SECONDS = 2.3   # 1 s windows: two full, one 0.3 s partial (masked)


@pytest.fixture(scope="module")
def encoder():
  return encoder_api.AudioEncoder.build(tiny_encoder_meta(), seed=0)


@pytest.fixture(scope="module")
def clip():
  t = np.arange(int(SECONDS * 16000)) / 16000
  noise = np.random.default_rng(0).normal(size=t.shape)
  return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def layers(encoder, clip):
  return encoder.embed_layers(clip, 16000)


def test_every_layer_has_25hz_frames_of_width_d(encoder, layers):
  depth = encoder.module.encoder.depth
  assert encoder.num_layers == depth
  names = ("patch",) + tuple(f"layer_{i}" for i in range(depth)) + ("last",)
  assert encoder.layer_names == names and tuple(layers) == names
  for frames in layers.values():
    assert frames.shape == (int(np.ceil(SECONDS * 25)), encoder.output_dim) and frames.dtype == np.float32
    assert np.all(np.isfinite(frames))


def test_last_is_todays_embed_and_each_view_matches_embed_layers(encoder, clip, layers):
  # Today's embed, written out: log-mel of each 1 s window, the module, valid frames.
  windows, masks = encoder._windows(clip)
  features, feature_mask = frontend.log_mel(jnp.asarray(windows), jnp.asarray(masks), encoder.frontend_cfg)
  frames, out_dict = encoder.module(features, feature_mask, deterministic=True)
  want = np.asarray(frames)[np.asarray(out_dict["frame_mask"])]
  default = encoder.embed(clip, 16000)
  np.testing.assert_allclose(default["frames"], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(layers["last"], default["frames"])
  np.testing.assert_array_equal(encoder.at_layer("last").embed(clip, 16000)["frames"], default["frames"])
  # "last" = the last block's raw output through the final LayerNorm.
  normed = encoder.module.encoder.final_norm(jnp.asarray(layers[f"layer_{encoder.num_layers - 1}"]))
  np.testing.assert_allclose(np.asarray(normed), layers["last"], rtol=1e-4, atol=1e-4)
  for layer in (0, encoder.num_layers - 1, "patch"):
    out = encoder.at_layer(layer).embed(clip, 16000)
    np.testing.assert_allclose(out["frames"], layers[encoder_api.layer_name(layer)], rtol=1e-5, atol=1e-5)
    assert set(out) == set(default) and out["pooled"].shape == (encoder.output_dim,)
    np.testing.assert_allclose(out["pooled"], out["frames"].mean(axis=0), rtol=1e-6)


def test_layers_differ(layers):
  names = list(layers)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert not np.allclose(layers[a], layers[b], atol=1e-3), (a, b)


def test_layer_spellings_and_invalid_layer(encoder):
  assert encoder.layer == "last" and encoder.at_layer(2).layer == 2
  assert encoder.at_layer("2").layer_name == encoder.at_layer("layer_2").layer_name == "layer_2"
  assert encoder.at_layer("patch").layer == "patch"
  for bad in (encoder.num_layers, -1, "first", "layer_x"):
    with pytest.raises(ValueError, match=r"choose an int 0\.\.3 \(block output\), 'last'.*'patch'"):
      encoder.at_layer(bad)
  with pytest.raises(ValueError, match="not a layer of this encoder"):
    encoder_api.AudioEncoder.build(tiny_encoder_meta(), layer=9)


def test_view_shares_weights_and_sync(clip):
  encoder = encoder_api.AudioEncoder.build(tiny_encoder_meta(), seed=1)
  view = encoder.at_layer(0)
  assert view.module is encoder.module and view._encode is encoder._encode
  before = view.embed(clip, 16000)["frames"]
  bias = encoder.module.patch_bias
  bias.value = bias.value + 1.0
  encoder.sync()
  after = view.embed(clip, 16000)["frames"]
  assert not np.allclose(before, after)


def test_fingerprints_differ_by_layer(encoder):
  fingerprint = embed_lib.encoder_fingerprint
  by_layer = {layer: fingerprint(encoder.at_layer(layer)) for layer in ("last", "patch", 0, 1, 3)}
  assert len(set(by_layer.values())) == len(by_layer)
  assert by_layer["last"] == fingerprint(encoder)   # the default keeps earlier caches' keys
  assert by_layer[1] == fingerprint(encoder.at_layer("layer_1"))


def test_load_and_build_with_a_layer(tmp_path, clip):
  enc_dir = write_encoder_dir(tmp_path / "enc", seed=3)
  loaded = encoder_api.AudioEncoder.load(enc_dir, layer=1)
  built = encoder_api.AudioEncoder.build(tiny_encoder_meta(), seed=3, layer=1)
  assert loaded.layer == built.layer == 1
  np.testing.assert_allclose(loaded.embed(clip, 16000)["frames"], built.embed(clip, 16000)["frames"], atol=1e-6)


def _task(out):
  (out / "audio").mkdir(parents=True)
  rows = {"train": [], "test": []}
  for i in range(12):
    label = ("low", "high")[i % 2]
    t = np.arange(8000) / 16000
    sf.write(out / f"audio/c{i}.wav", (0.5 * np.sin(2 * np.pi * (300 if label == "low" else 2400) * t)), 16000)
    rows["test" if i >= 8 else "train"].append((f"audio/c{i}.wav", label))
  for split, split_rows in rows.items():
    with open(out / f"{split}.csv", "w", newline="") as f:
      csv.writer(f).writerows([("path", "label"), *split_rows])
  return out


def test_cli_layer_is_recorded_and_checked(tmp_path, capsys):
  from alp_jax.evaluate.__main__ import main
  enc_dir = write_encoder_dir(tmp_path / "enc")
  task = _task(tmp_path / "task")
  base = ["--encoder", str(enc_dir), "--task-dir", str(task), "--pooling", "mean", "--suite", "probe",
          "--cache-dir", str(tmp_path / "cache")]
  assert main([*base, "--layer", "1", "--out", str(tmp_path / "l1.json")]) == 0
  assert main([*base, "--out", str(tmp_path / "last.json")]) == 0
  l1, last = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("l1", "last"))
  assert l1["protocol"]["encoder"]["layer"] == 1 and last["protocol"]["encoder"]["layer"] == "last"
  assert len(list((tmp_path / "cache").glob("*/train.pooled"))) == 2   # one cache entry per layer
  assert main([*base, "--layer", "7", "--out", str(tmp_path / "bad.json")]) == 2
  assert "--layer 7" in capsys.readouterr().err
