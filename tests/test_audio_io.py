"""Host audio: decoding, downmix and anti-aliased resampling to 16 kHz."""
import numpy as np
import pytest
import soundfile as sf

from alp_jax.audio import io as audio_io

from corpus_fixtures import sine


def _peak_frequency(x: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  k = int(np.argmax(spectrum))
  # Parabolic interpolation around the peak bin.
  a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-12)
  return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(x)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("freq", [440.0, 3100.0])
def test_resampling_preserves_frequency_and_energy(tmp_path, rate, freq):
  if freq >= rate / 2:
    pytest.skip("above the input's Nyquist")
  x = sine(freq, 2.0, rate, amplitude=0.5)
  path = tmp_path / f"s{rate}.flac"
  sf.write(path, x, rate, subtype="PCM_24")
  y = audio_io.load_audio(path)
  assert abs(len(y) - 2.0 * 16000) <= 2
  core = y[1600:-1600]  # away from the resampler's edge transients
  assert abs(_peak_frequency(core, 16000) - freq) < 1.0
  # A sine of amplitude A has mean power A^2 / 2.
  np.testing.assert_allclose(np.mean(core.astype(np.float64) ** 2), 0.5**2 / 2, rtol=0.01)


def test_resampling_is_anti_aliased():
  # 10 kHz is above the 8 kHz Nyquist of the target: it must be removed, not folded to 6 kHz as naive
  # decimation or linear interpolation would.
  x = sine(10000.0, 1.0, 48000, amplitude=0.5)
  y = audio_io.resample(x, 48000, 16000)[800:-800]
  assert np.sqrt(np.mean(y**2)) < 1e-3 * 0.5


def test_stereo_is_downmixed(tmp_path):
  rate = 22050
  left = sine(500.0, 1.0, rate, amplitude=0.6)
  right = sine(1500.0, 1.0, rate, amplitude=0.2)
  path = tmp_path / "stereo.wav"
  sf.write(path, np.stack([left, right], axis=1), rate, subtype="FLOAT")
  y = audio_io.load_audio(path)
  assert y.ndim == 1
  spectrum = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(len(y) - 2000)))
  freqs = np.fft.rfftfreq(len(y) - 2000, 1 / 16000)
  amp = lambda f: spectrum[np.argmin(np.abs(freqs - f))]
  # Mean of channels: amplitudes 0.3 and 0.1, ratio 3.
  np.testing.assert_allclose(amp(500) / amp(1500), 3.0, rtol=0.05)


def test_int16_roundtrip_and_clipping():
  x = np.array([0.0, 0.5, -0.5, 1.2, -1.2], np.float32)
  q = audio_io.to_int16(x)
  np.testing.assert_array_equal(q, [0, 16384, -16384, 32767, -32768])
  np.testing.assert_allclose(audio_io.from_int16(q)[:3], x[:3], atol=1 / 32768)
