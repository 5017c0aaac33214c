"""alp_jax.hear: the HEAR API over the tiny exported encoder (1 s windows, 25 frames each), on HEAR's shapes."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from alp_jax import encoder_api
from alp_jax import hear
from alp_jax.audio import frontend

try:
  import torch
except ImportError:
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (the HEAR kits hand over torch "
                                 "tensors): pip install 'alp_jax[hear]'")

SR = hear.SAMPLE_RATE
REPO = pathlib.Path(hear.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(encoder_dir):
  return hear.load_model(encoder_dir, windows_per_batch=3)   # the shape test_embed_store compiles


@pytest.fixture(scope="module")
def reference(encoder_dir):
  """The embed API over the same export: what HEAR's outputs must agree with."""
  return encoder_api.AudioEncoder.load(encoder_dir)


def _noise(sounds: int, seconds: float, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1, 1, (sounds, int(seconds * SR))).astype(np.float32)


def _stack_centres_ms(num_samples: int, meta: dict) -> np.ndarray:
  """Independently of alp_jax.hear: centres (ms) of the encoder's output frames on the Kaldi grid. Mel frame t of
  a window starting at sample k*S is centred at k*S + t*H + H/2 (snip_edges=False); an output frame stacks
  `stack` consecutive mel frames and is centred at their mean; a window holds S/H mel frames."""
  cfg = ml_collections.ConfigDict(meta["frontend"])
  _, hop, _ = frontend.frame_geometry(cfg)
  window = int(round(meta["crop_seconds"] * SR))
  stack = meta["audio"]["stack"]
  centres = []
  for start in range(0, num_samples, window):
    mel = start + np.arange(window // hop) * hop + hop / 2                       # (S/H,) samples
    centres.append(mel.reshape(-1, stack).mean(axis=1))                          # (T',)
  return np.concatenate(centres) * 1000.0 / SR


@pytest.mark.parametrize("seconds", [1.07, 1.01, 2.74])
def test_timestamp_embeddings_on_hear_shapes(model, reference, seconds):
  """(B, N) audio -> (B, T, D) float32 frames equal to the embed API's, timestamps at the frames' centres on
  the mel grid, none past the end, the last within two hops of it. 1.01 s leaves a 10 ms tail whose only frame is
  centred at 1020 ms: it is left out of the timestamps (but not of the embed API's frames)."""
  audio = _noise(2, seconds, seed=int(seconds * 100))
  embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
  assert isinstance(embeddings, np.ndarray) and embeddings.dtype == timestamps.dtype == np.float32
  duration_ms = 1000.0 * audio.shape[1] / SR
  centres = _stack_centres_ms(audio.shape[1], reference.meta)
  expected = centres[centres <= duration_ms]
  assert embeddings.shape == (2, len(expected), model.timestamp_embedding_size)
  assert timestamps.shape == (2, len(expected))
  np.testing.assert_allclose(timestamps, np.broadcast_to(expected, (2, len(expected))), atol=1e-3)
  assert duration_ms - 2 * model.hop_ms <= timestamps.max() <= duration_ms
  for row, sound in zip(embeddings, audio):
    frames = reference.embed(sound, SR)["frames"]
    assert len(frames) >= len(expected) and len(frames) - len(expected) == (seconds == 1.01)
    np.testing.assert_allclose(row, frames[:len(expected)], rtol=1e-5, atol=1e-5)


def test_long_audio_in_bounded_batches(model, reference):
  """9.5 s sounds (10 windows each, 20 in all) go through batches of 3 windows; the frames match the embed API's
  and the timestamps stay regular: no drift over many windows. The last frame (half a stack) is centred at
  9500 ms, the sound's end, and is kept."""
  audio = _noise(2, 9.5, seed=5)
  embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
  assert embeddings.shape == (2, 238, model.timestamp_embedding_size)
  np.testing.assert_allclose(np.diff(timestamps, axis=1), model.hop_ms, atol=1e-3)
  np.testing.assert_allclose(timestamps[:, [0, -1]], [[20.0, 9500.0]] * 2, atol=1e-3)
  np.testing.assert_allclose(embeddings[1], reference.embed(audio[1], SR)["frames"], rtol=1e-5, atol=1e-5)


def test_scene_embeddings_are_the_embed_api_mean(model, reference):
  """(B, N) -> (B, D): each sound's mean over all its frames (the 1.01 s tail frame included), as the embed API's
  pooled vector; the sounds differ, so do their embeddings."""
  audio = _noise(3, 1.01, seed=7)
  scene = hear.get_scene_embeddings(audio, model)
  assert isinstance(scene, np.ndarray) and scene.dtype == np.float32
  assert scene.shape == (3, model.scene_embedding_size)
  expected = np.stack([reference.embed(sound, SR)["pooled"] for sound in audio])
  np.testing.assert_allclose(scene, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(expected[0], expected[1])


@needs_torch
def test_torch_module_torch_tensors(model):
  """The HEAR attributes (ints, 16 kHz) on a torch module the kits can .to(device); torch tensors in, float32 torch
  tensors out with the numpy path's values; X-ARES's names, forward = the timestamp embeddings."""
  assert isinstance(model, torch.nn.Module)
  assert model.sample_rate == SR and type(model.scene_embedding_size) is int
  assert model.scene_embedding_size == model.timestamp_embedding_size == model.encoder.output_dim
  assert model.hop_ms == pytest.approx(40.0) and model.hop_size_in_ms == model.hop_ms
  assert model.to("cpu") is model
  audio = _noise(2, 1.07, seed=107)
  embeddings, timestamps = hear.get_timestamp_embeddings(torch.from_numpy(audio), model)
  scene = hear.get_scene_embeddings(torch.from_numpy(audio), model)
  for tensor in (embeddings, timestamps, scene):
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32 and tensor.device.type == "cpu"
  want_embeddings, want_timestamps = hear.get_timestamp_embeddings(audio, model)
  np.testing.assert_array_equal(embeddings.numpy(), want_embeddings)
  np.testing.assert_array_equal(timestamps.numpy(), want_timestamps)
  np.testing.assert_array_equal(scene.numpy(), hear.get_scene_embeddings(audio, model))
  np.testing.assert_array_equal(model(torch.from_numpy(audio)).numpy(), want_embeddings)


def test_model_path_and_options(encoder_dir):
  """encoder_config.json is accepted as the model path; hear-eval-kit's --model-options arrive as keyword
  arguments, numbers possibly as strings."""
  view = hear.load_model(os.path.join(encoder_dir, encoder_api.CONFIG_FILE), layer="1", windows_per_batch="5")
  assert view.encoder.layer_name == "layer_1" and view.windows_per_batch == 5


def test_bad_inputs_say_what_is_wrong(model, tmp_path):
  with pytest.raises(FileNotFoundError, match="not an exported encoder.*alp_jax.export"):
    hear.load_model(tmp_path / "missing")
  with pytest.raises(ValueError, match="needs an exported encoder folder"):
    hear.load_model()
  with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\).*audio\[None\]"):
    hear.get_scene_embeddings(np.zeros(16000, np.float32), model)
  with pytest.raises(ValueError, match="floating-point"):
    hear.get_scene_embeddings(np.zeros((1, 16000), np.int16), model)
  audio = np.zeros((3, 16000), np.float32)
  audio[1, 5] = np.nan
  with pytest.raises(ValueError, match=r"NaN or infinite samples in sound\(s\) \[1\]"):
    hear.get_timestamp_embeddings(audio, model)
  with pytest.raises(ValueError, match="sound 0: 10 samples.*no encoder frame"):
    hear.get_scene_embeddings(np.zeros((1, 10), np.float32), model)
  with pytest.raises(ValueError, match="windows_per_batch must be at least 1"):
    hear.load_model(tmp_path / "missing", windows_per_batch="0")
  with pytest.raises(TypeError, match="load_model"):
    hear.get_scene_embeddings(audio, object())


@pytest.mark.slow   # importing TensorFlow takes ~15 s here
def test_tensorflow_in_tensorflow_out(model):
  tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (hearvalidator pulls it in)")
  audio = _noise(2, 1.07, seed=3)
  embeddings, timestamps = hear.get_timestamp_embeddings(tf.convert_to_tensor(audio), model)
  assert isinstance(embeddings, tf.Tensor) and embeddings.dtype == tf.float32
  np.testing.assert_array_equal(embeddings.numpy(), hear.get_timestamp_embeddings(audio, model)[0])


@pytest.mark.slow
def test_hearvalidator_passes(encoder_dir):
  """The HEAR 2021 validator from PyPI (hearvalidator) on the tiny export, in its own process as the kits run it."""
  missing = [name for name in ("hearvalidator", "tensorflow", "torch") if importlib.util.find_spec(name) is None]
  if missing:
    pytest.skip(f"{' and '.join(missing)} not installed: hearvalidator imports TensorFlow and torch (~1 GB), so it "
                f"is kept out of the test extra; pip install 'alp_jax[hear]' to run this check")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  result = subprocess.run([sys.executable, "-m", "hearvalidator.validate", "alp_jax.hear", "--model",
                           str(encoder_dir), "--device", "cpu"], capture_output=True, text=True, env=env,
                          timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "Looks good!" in result.stdout
  assert f"timestamp_embedding_size: {hear.load_model(encoder_dir).timestamp_embedding_size}" in result.stdout
