"""Source mixture weights: hours (the study's rule, default), cropped hours (what a visit can use), explicit."""
import numpy as np
import pytest

from alp_jax.data import pipeline

# Clip durations in seconds per source: short clips, crop-length clips, long-form tracks.
DURATIONS = {"events": [1.0, 4.5, 7.25, 2.0], "audioset": [10.0] * 3, "tracks": [180.0, 240.5]}


def _sources() -> list[pipeline.SourceInfo]:
  out = []
  for name, seconds in DURATIONS.items():
    samples = np.asarray([int(round(s * pipeline.SAMPLE_RATE)) for s in seconds], np.int64)
    out.append(pipeline.SourceInfo(name, (), np.zeros(len(seconds)), np.ones(len(seconds), np.int32), samples,
                                   float(samples.sum()) / pipeline.SAMPLE_RATE / 3600))
  return out


def _cfg(**overrides):
  cfg = pipeline.default_data_config()
  cfg.update(overrides)
  return cfg


def _normalised(weights: dict) -> list[float]:
  return [weights[name] / sum(weights.values()) for name in DURATIONS]


@pytest.mark.parametrize("crop", [10.0, 3.0])
def test_cropped_hours_count_the_seconds_a_visit_uses(crop):
  factors = {"tracks": 2.0}
  got = pipeline.mixture_weights(_sources(), _cfg(mixture="cropped_hours", crop_seconds=crop, source_weights=factors))
  expected = {name: sum(min(d, crop) for d in seconds) * factors.get(name, 1.0) for name, seconds in DURATIONS.items()}
  np.testing.assert_allclose(got, _normalised(expected), rtol=1e-9)


def test_hours_is_the_default_and_over_weights_long_form_sources():
  cfg = _cfg(crop_seconds=10.0)
  assert cfg.mixture == "hours"
  hours = pipeline.mixture_weights(_sources(), cfg)
  np.testing.assert_allclose(hours, _normalised({n: sum(s) for n, s in DURATIONS.items()}), rtol=1e-9)
  cropped = pipeline.mixture_weights(_sources(), _cfg(mixture="cropped_hours", crop_seconds=10.0))
  # Per clip, hours visit a 3-4 minute track 21x as often as a 10 s clip; cropped hours visit them equally often.
  per_clip = {name: w / len(DURATIONS[name]) for name, w in zip(DURATIONS, cropped)}
  assert per_clip["tracks"] == pytest.approx(per_clip["audioset"])
  assert hours[2] / hours[1] == pytest.approx(420.5 / 30.0)
  assert cropped[2] < hours[2] and cropped[0] > hours[0]


def test_explicit_and_bad_modes():
  explicit = pipeline.mixture_weights(_sources(), _cfg(mixture="explicit", source_weights={"events": 3.0}))
  np.testing.assert_allclose(explicit, [3 / 5, 1 / 5, 1 / 5])
  with pytest.raises(ValueError, match="cropped_hours"):
    pipeline.mixture_weights(_sources(), _cfg(mixture="seconds"))
  with pytest.raises(ValueError, match="> 0"):
    pipeline.mixture_weights(_sources(), _cfg(mixture="cropped_hours", source_weights={"tracks": 0.0}))
