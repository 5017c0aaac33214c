"""NumPy synthesisers for the out-of-distribution probe tasks (alp_jax/demo/ood_tasks.py).

Legend: N samples of one clip, H harmonics, K events (impacts, clicks, drips ...) of one clip.

Nothing here shares a path with the demo corpus (espeak-ng, fluidsynth + TimGM6mb, sox): every waveform is
computed from its parameters with NumPy, vectorised over samples (and harmonics); only the Karplus-Strong
string and the event placement loop in Python, over periods and events. Each `sample_*` draws the parameters
of one clip from a Generator (JSON-able, they go into the build file); each `render_*` turns parameters and a
noise seed into float64 samples in [-1, 1]: the same parameters and seed always give the same samples.

Pitched notes (TIMBRES):
  additive   static harmonics with a spectral tilt n^-tilt and weakened even harmonics, exponential decay
  square     naive pulse wave (duty 0.3-0.5), organ-like sustain
  sawtooth   naive sawtooth, sustain
  fm_bell    two-operator FM, inharmonic ratio (harmonic for pitch tasks), decaying index and amplitude
  plucked    Karplus-Strong string, pitch corrected by resampling
  bowed      band-limited sawtooth with vibrato, slow attack and bow noise
Events (EVENTS): clicks (click train at 3-25 Hz), noise_burst (band-passed noise bursts), bouncing (impacts at
geometrically shrinking intervals), drip (rising sine chirps), clap (hand-clap-like multi-burst noise), knock
(low damped thumps with a pitch drop), optionally over low-level background noise.
"""
from __future__ import annotations

import numpy as np

TIMBRES = ("additive", "square", "sawtooth", "fm_bell", "plucked", "bowed")
EVENTS = ("clicks", "noise_burst", "bouncing", "drip", "clap", "knock")
MAX_HARMONICS = 40
TABLE = 2048                      # wavetable points of one period (_harmonic_sum)
FM_RATIOS = (1.4, 2.76, 3.5)      # inharmonic: a bell
HARMONIC_FM_RATIOS = (1.0, 2.0, 3.0)   # harmonic=True: the FM note has a definite pitch


def midi_to_hz(midi: float) -> float:
  return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
  return round(float(rng.uniform(low, high)), 5)


# ---------------------------------------------------------------------------------------------- pitched notes

def sample_note(rng: np.random.Generator, timbre: str, midi: float, seconds: float, *,
                harmonic: bool = False) -> dict:
  """The parameters of one note: timbre, pitch (MIDI, fractional), length, and the timbre's own settings.
  harmonic=True gives fm_bell a harmonic ratio (its partials then have a definite pitch: pitch tasks)."""
  attrs = {"timbre": timbre, "midi": round(float(midi), 4), "seconds": round(float(seconds), 4),
           "attack": _uniform(rng, 0.004, 0.04), "release": _uniform(rng, 0.03, 0.2)}
  if timbre == "additive":
    attrs.update(tilt=_uniform(rng, 0.7, 2.2), even=_uniform(rng, 0.2, 1.0), decay=_uniform(rng, 0.4, 2.5))
  elif timbre == "square":
    attrs.update(duty=_uniform(rng, 0.3, 0.5))
  elif timbre == "fm_bell":
    ratios = HARMONIC_FM_RATIOS if harmonic else FM_RATIOS
    attrs.update(ratio=ratios[int(rng.integers(len(ratios)))], index=_uniform(rng, 2.0, 6.0),
                 decay=_uniform(rng, 0.4, 1.5), index_decay=_uniform(rng, 0.1, 0.5), attack=0.002)
  elif timbre == "plucked":
    attrs.update(rho=_uniform(rng, 0.990, 0.999), brightness=_uniform(rng, 0.2, 1.0), attack=0.0)
  elif timbre == "bowed":
    attrs.update(attack=_uniform(rng, 0.15, 0.5), vibrato_hz=_uniform(rng, 4.5, 6.5),
                 vibrato_semitones=_uniform(rng, 0.1, 0.3), noise=_uniform(rng, 0.01, 0.05))
  elif timbre not in TIMBRES:
    raise ValueError(f"unknown timbre {timbre!r}; choose from {TIMBRES}")
  return attrs


def _envelope(num_samples: int, sample_rate: int, attack: float, release: float) -> np.ndarray:
  """(N,) linear attack, sustain at 1, linear release to 0 at the end."""
  t = np.arange(num_samples) / sample_rate
  env = np.minimum(1.0, t / attack) if attack > 0 else np.ones(num_samples)
  return np.minimum(env, (num_samples / sample_rate - t) / release)


def _harmonic_sum(phase: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
  """(N,) fundamental phase (radians), (H,) amplitudes and start phases -> (N,) sum of the H harmonics.

  The sum is a fixed function of the phase: one period is tabulated (TABLE points) and read by linear
  interpolation (error < -60 dB for H <= 40), so the cost does not grow with H x N."""
  grid = 2 * np.pi * np.arange(TABLE + 1) / TABLE                    # (TABLE+1,) one period, closed
  n = np.arange(1, len(amps) + 1)[:, None]                           # (H,1)
  table = amps @ np.sin(n * grid[None, :] + phases[:, None])         # (H,) x (H,TABLE+1) -> (TABLE+1,)
  return np.interp((phase / (2 * np.pi)) % 1.0 * TABLE, np.arange(TABLE + 1), table)


def _num_harmonics(f0: float, sample_rate: int) -> int:
  return int(max(1, min(MAX_HARMONICS, 0.45 * sample_rate // f0)))


def _karplus_strong(f0: float, num_samples: int, sample_rate: int, rho: float, brightness: float,
                    rng: np.random.Generator) -> np.ndarray:
  """Plucked string: a noise burst circulating in a delay line of P samples with a two-point average (period
  P + 0.5), one vectorised step per period; then resampled so the pitch is exactly f0."""
  period = max(2, int(round(sample_rate / f0 - 0.5)))
  actual = sample_rate / (period + 0.5)
  needed = int(np.ceil(num_samples * f0 / actual)) + 2
  blocks = -(-needed // period) + 1
  line = np.empty((blocks, period))
  burst = rng.uniform(-1.0, 1.0, period)
  line[0] = brightness * burst + (1.0 - brightness) * 0.5 * (burst + np.roll(burst, 1))
  before = 0.0   # y[kP - 1], the sample before the previous block
  for k in range(1, blocks):
    previous = line[k - 1]
    line[k] = rho * 0.5 * (previous + np.concatenate(([before], previous[:-1])))
    before = previous[-1]
  string = line.ravel()
  return np.interp(np.arange(num_samples) * (f0 / actual), np.arange(len(string)), string)


def render_note(attrs: dict, sample_rate: int, noise_seed) -> np.ndarray:
  """(N,) one note, peak 1 (before the caller's gain)."""
  rng = np.random.default_rng(noise_seed)
  n = int(round(attrs["seconds"] * sample_rate))
  t = np.arange(n) / sample_rate
  f0 = midi_to_hz(attrs["midi"])
  timbre = attrs["timbre"]
  env = _envelope(n, sample_rate, attrs["attack"], attrs["release"])
  if timbre == "additive":
    h = _num_harmonics(f0, sample_rate)
    k = np.arange(1, h + 1)
    amps = k ** -attrs["tilt"] * np.where(k % 2 == 0, attrs["even"], 1.0)
    wave = _harmonic_sum(2 * np.pi * f0 * t, amps, rng.uniform(0, 2 * np.pi, h)) * np.exp(-t / attrs["decay"])
  elif timbre == "square":
    duty = attrs["duty"]
    wave = np.where((f0 * t) % 1.0 < duty, 1.0, -1.0) - (2 * duty - 1)
  elif timbre == "sawtooth":
    wave = 2.0 * ((f0 * t + rng.uniform()) % 1.0) - 1.0
  elif timbre == "fm_bell":
    index = attrs["index"] * np.exp(-t / attrs["index_decay"])
    wave = np.sin(2 * np.pi * f0 * t + index * np.sin(2 * np.pi * f0 * attrs["ratio"] * t))
    wave *= np.exp(-t / attrs["decay"])
  elif timbre == "plucked":
    wave = _karplus_strong(f0, n, sample_rate, attrs["rho"], attrs["brightness"], rng)
  elif timbre == "bowed":
    vibrato = attrs["vibrato_semitones"] * np.sin(2 * np.pi * attrs["vibrato_hz"] * t) * np.minimum(1.0, t / 0.4)
    phase = 2 * np.pi * np.cumsum(f0 * 2.0 ** (vibrato / 12.0)) / sample_rate
    h = _num_harmonics(f0 * 1.02, sample_rate)
    wave = _harmonic_sum(phase, 1.0 / np.arange(1, h + 1), rng.uniform(0, 2 * np.pi, h))
    wave += attrs["noise"] * rng.standard_normal(n) * np.abs(wave).max()
  else:
    raise ValueError(f"unknown timbre {timbre!r}; choose from {TIMBRES}")
  return _normalise(wave * env)


# ---------------------------------------------------------------------------------------------- events

def sample_event(rng: np.random.Generator, kind: str, seconds: float) -> dict:
  """The parameters of one event clip (timings in seconds, frequencies in Hz)."""
  attrs = {"event": kind, "seconds": round(float(seconds), 4), "start": _uniform(rng, 0.0, 0.3),
           "background_db": (_uniform(rng, -50.0, -32.0) if rng.uniform() < 0.5 else None)}
  if kind == "clicks":
    attrs.update(rate=_uniform(rng, 3.0, 25.0), jitter=_uniform(rng, 0.0, 0.2), tone=_uniform(rng, 1200, 3500),
                 decay=_uniform(rng, 0.0005, 0.002))
  elif kind == "noise_burst":
    attrs.update(bursts=int(rng.integers(1, 4)), length=_uniform(rng, 0.08, 0.4), centre=_uniform(rng, 200, 3000),
                 octaves=_uniform(rng, 0.3, 1.2))
  elif kind == "bouncing":
    attrs.update(first_gap=_uniform(rng, 0.25, 0.6), restitution=_uniform(rng, 0.6, 0.85),
                 tone=_uniform(rng, 400, 2000), decay=_uniform(rng, 0.005, 0.02))
  elif kind == "drip":
    attrs.update(drips=int(rng.integers(2, 7)), low=_uniform(rng, 300, 800), rise=_uniform(rng, 1.5, 3.0),
                 length=_uniform(rng, 0.02, 0.08))
  elif kind == "clap":
    attrs.update(claps=int(rng.integers(2, 7)), gap=_uniform(rng, 0.15, 0.5), centre=_uniform(rng, 800, 2500),
                 tail=_uniform(rng, 0.03, 0.08))
  elif kind == "knock":
    attrs.update(knocks=int(rng.integers(2, 6)), gap=_uniform(rng, 0.12, 0.3), tone=_uniform(rng, 60, 200),
                 decay=_uniform(rng, 0.02, 0.06))
  else:
    raise ValueError(f"unknown event {kind!r}; choose from {EVENTS}")
  return attrs


def _convolve(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """(N,) * (L,) -> (N,) linear convolution by FFT, cut to N."""
  size = 1 << int(np.ceil(np.log2(len(signal) + len(kernel))))
  return np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(kernel, size), size)[:len(signal)]


def _place(num_samples: int, times: np.ndarray, amps: np.ndarray, kernel: np.ndarray, sample_rate: int) -> np.ndarray:
  """(N,) the kernel started at each of the K times (seconds) with its amplitude."""
  impulses = np.zeros(num_samples)
  index = np.round(np.asarray(times) * sample_rate).astype(int)
  keep = index < num_samples
  np.add.at(impulses, index[keep], np.asarray(amps, float)[keep])
  return _convolve(impulses, kernel)


def _band_pass(noise: np.ndarray, centre: float, octaves: float, sample_rate: int) -> np.ndarray:
  """(N,) noise through a Gaussian band (in log frequency) around `centre`, `octaves` wide, by FFT."""
  freqs = np.fft.rfftfreq(len(noise), 1.0 / sample_rate)
  gain = np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / centre) / (octaves / 2)) ** 2)
  return np.fft.irfft(np.fft.rfft(noise) * gain, len(noise))


def _damped(sample_rate: int, tone: float, decay: float, *, drop: float = 1.0) -> np.ndarray:
  """(L,) a damped sinusoid of `decay` s, its frequency gliding from drop*tone to tone."""
  t = np.arange(int(6 * decay * sample_rate) + 1) / sample_rate
  freq = tone * (1.0 + (drop - 1.0) * np.exp(-t / decay))
  return np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.exp(-t / decay)


def render_event(attrs: dict, sample_rate: int, noise_seed) -> np.ndarray:
  """(N,) one event clip, peak 1 before the background (the caller applies the gain)."""
  rng = np.random.default_rng(noise_seed)
  n = int(round(attrs["seconds"] * sample_rate))
  end = attrs["seconds"] - 0.1
  kind, start = attrs["event"], attrs["start"]
  if kind == "clicks":
    period = 1.0 / attrs["rate"]
    times = np.arange(start, end, period)
    times = times + attrs["jitter"] * period * rng.uniform(-0.5, 0.5, len(times))
    wave = _place(n, np.clip(times, 0, None), rng.uniform(0.6, 1.0, len(times)),
                  _damped(sample_rate, attrs["tone"], attrs["decay"]), sample_rate)
  elif kind == "noise_burst":
    noise = _band_pass(rng.standard_normal(n), attrs["centre"], attrs["octaves"], sample_rate)
    t = np.arange(n) / sample_rate
    onsets = np.sort(rng.uniform(start, max(start, end - attrs["length"]), attrs["bursts"]))
    local = t[None, :] - onsets[:, None]                                        # (K,N)
    gate = np.clip(np.minimum(local / 0.01, (attrs["length"] - local) / 0.03), 0.0, 1.0).max(axis=0)
    wave = noise * gate
  elif kind == "bouncing":
    gaps = attrs["first_gap"] * attrs["restitution"] ** np.arange(40)
    gaps = gaps[gaps > 0.015]
    times = start + np.concatenate(([0.0], np.cumsum(gaps)))
    kernel = _damped(sample_rate, attrs["tone"], attrs["decay"])
    kernel[:16] += 0.5 * rng.standard_normal(min(16, len(kernel)))
    wave = _place(n, times[times < end], attrs["restitution"] ** np.arange(len(times))[times < end], kernel,
                  sample_rate)
  elif kind == "drip":
    t = np.arange(int(attrs["length"] * sample_rate)) / sample_rate
    freq = attrs["low"] * attrs["rise"] ** (t / attrs["length"])                # exponential rise
    chirp = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.sin(np.pi * t / attrs["length"]) ** 2
    times = np.sort(rng.uniform(start, end, attrs["drips"]))
    wave = _place(n, times, rng.uniform(0.5, 1.0, len(times)), chirp, sample_rate)
  elif kind == "clap":
    t = np.arange(int(0.15 * sample_rate)) / sample_rate
    bursts = np.array([0.0, 0.008, 0.017])[:, None] + rng.uniform(0, 0.004, (3, 1))   # 3 micro-bursts
    local = t[None, :] - bursts
    env = (np.where(local >= 0, np.exp(-np.maximum(local, 0) / 0.004), 0.0).sum(axis=0)
           + 0.5 * np.where(t > 0.017, np.exp(-(t - 0.017) / attrs["tail"]), 0.0))
    kernel = _band_pass(rng.standard_normal(len(t)), attrs["centre"], 1.2, sample_rate) * env
    times = start + attrs["gap"] * np.arange(attrs["claps"]) * rng.uniform(0.9, 1.1, attrs["claps"])
    wave = _place(n, times[times < end], rng.uniform(0.7, 1.0, attrs["claps"])[times < end], kernel, sample_rate)
  elif kind == "knock":
    kernel = _damped(sample_rate, attrs["tone"], attrs["decay"], drop=1.6)
    kernel[:24] += 0.3 * rng.standard_normal(min(24, len(kernel))) * np.exp(-np.arange(min(24, len(kernel))) / 6)
    times = start + attrs["gap"] * np.arange(attrs["knocks"]) * rng.uniform(0.9, 1.1, attrs["knocks"])
    wave = _place(n, times[times < end], rng.uniform(0.7, 1.0, attrs["knocks"])[times < end], kernel, sample_rate)
  else:
    raise ValueError(f"unknown event {kind!r}; choose from {EVENTS}")
  return _normalise(wave)


def background(num_samples: int, level_db: float, rng: np.random.Generator) -> np.ndarray:
  """(N,) pinkish noise (1/sqrt(f) spectrum) at `level_db` dBFS RMS."""
  spectrum = np.fft.rfft(rng.standard_normal(num_samples))
  spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
  noise = np.fft.irfft(spectrum, num_samples)
  return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12) * 10 ** (level_db / 20)


def _normalise(wave: np.ndarray) -> np.ndarray:
  peak = np.abs(wave).max()
  return wave / peak if peak > 0 else wave
