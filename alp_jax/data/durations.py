"""The clip-duration rule of prepare and validate: how clips shorter or longer than the kept range are handled.

  rule = DurationRule()                                  # the study's: keep 1-60 s, drop the rest
  rule = DurationRule(max_seconds=30.0, long_clips="window")
  rule.check(record, seconds)    # -> manifest.Problem (too_short / too_long) for a clip the rule drops, else None
  rule.pieces(seconds, num_samples, 16000)  # -> [(start, stop), ...] sample ranges kept of a clip the rule keeps
  counts = DurationCounts(rule); counts.dropped(source, kind); counts.kept(source, num_samples, pieces, rate)
  counts.summary()               # -> corpus.json["durations"]; counts.lines() -> the summary lines prepare prints

The study's rule (../shared/STUDY.md, 2.1 "Duration handling" [CODE]: "cuts shorter than 1 s or longer than 60 s
are dropped"; the same section notes the toolkit config's `utt_max_duration: 30`, whose effect it does not say) is
the default: min_seconds 1, max_seconds 60, long_clips "drop". A clip exactly 1 s or 60 s long is
kept. Durations are the decoded audio's (samples / the file's own rate), the same number in validate and prepare.

  too short (< min_seconds)  always dropped (problem kind `too_short`): there is nothing to keep.
  too long (> max_seconds)   long_clips = "drop"   dropped (problem kind `too_long`; the study)
                             long_clips = "cap"    the first max_seconds are kept, the rest is discarded
                             long_clips = "window" cut into n = ceil(duration / max_seconds) consecutive windows of
                                                   equal length (each > max_seconds / 2, so >= min_seconds), every
                                                   window a clip with the record's captions and labels

Every dropped clip is a problem (bad_records.jsonl, corpus.json["skipped"]); every capped or windowed clip is
counted, per source, in corpus.json["durations"] with the seconds cut away; nothing is changed silently.
min_seconds 0 and max_seconds inf switch either side off (manifest.MIN_SECONDS / MAX_SECONDS still apply).
"""
from __future__ import annotations

import collections
import dataclasses
import math

from alp_jax.data import manifest as mf

STUDY_MIN_SECONDS = 1.0
STUDY_MAX_SECONDS = 60.0
LONG_CLIP_POLICIES = ("drop", "cap", "window")


@dataclasses.dataclass(frozen=True)
class DurationRule:
  min_seconds: float = STUDY_MIN_SECONDS
  max_seconds: float = STUDY_MAX_SECONDS
  long_clips: str = "drop"

  def __post_init__(self):
    if self.long_clips not in LONG_CLIP_POLICIES:
      raise ValueError(f"long_clips must be one of {LONG_CLIP_POLICIES}, got {self.long_clips!r}")
    if not (0.0 <= self.min_seconds < self.max_seconds) or math.isnan(self.max_seconds):
      raise ValueError(f"need 0 <= min_seconds < max_seconds, got min_seconds {self.min_seconds} and max_seconds "
                       f"{self.max_seconds}")
    if self.long_clips == "window":
      if self.max_seconds == math.inf:
        raise ValueError("long_clips 'window' needs a finite max_seconds (the window length)")
      if self.max_seconds < 2 * self.min_seconds:
        raise ValueError(f"long_clips 'window' needs max_seconds >= 2 x min_seconds (windows are longer than "
                         f"max_seconds / 2), got {self.max_seconds} and {self.min_seconds}")

  def to_json(self) -> dict:
    return {"min_seconds": self.min_seconds,
            "max_seconds": None if self.max_seconds == math.inf else self.max_seconds,
            "long_clips": self.long_clips}

  @classmethod
  def from_json(cls, obj: dict) -> "DurationRule":
    max_seconds = obj.get("max_seconds")
    return cls(float(obj["min_seconds"]), math.inf if max_seconds is None else float(max_seconds), obj["long_clips"])

  def describe(self) -> str:
    top = "no maximum" if self.max_seconds == math.inf else f"{self.max_seconds:g} s"
    return f"keep {self.min_seconds:g} s to {top}, long clips: {self.long_clips}"

  def check(self, record: mf.Record, seconds: float) -> mf.Problem | None:
    """The Problem for a clip of `seconds` this rule drops (too_short, or too_long under 'drop'), else None."""
    if seconds < self.min_seconds:
      return mf.Problem(mf.TOO_SHORT, f"{record.audio_path} lasts {seconds:.3f} s, under the {self.min_seconds:g} s "
                        f"minimum (prepare --min-seconds)", record.manifest, record.line, record.id)
    if seconds > self.max_seconds and self.long_clips == "drop":
      return mf.Problem(mf.TOO_LONG, f"{record.audio_path} lasts {seconds:.3f} s, over the {self.max_seconds:g} s "
                        f"maximum (prepare --max-seconds; --long-clips cap or window keeps it)", record.manifest,
                        record.line, record.id)
    return None

  def pieces(self, seconds: float, num_samples: int, sample_rate: int) -> list[tuple[int, int]]:
    """Sample ranges [start, stop) of the `num_samples` (at `sample_rate`) kept of a clip of `seconds` (as check()
    measured it) this rule keeps: the whole clip, its first max_seconds, or its windows (consecutive, equal to
    within one sample, covering the clip)."""
    if seconds <= self.max_seconds:
      return [(0, num_samples)]
    limit = min(int(round(self.max_seconds * sample_rate)), num_samples)
    if self.long_clips == "cap":
      return [(0, limit)]
    if self.long_clips == "window":
      n = max(1, -(-num_samples // limit))
      bounds = [round(k * num_samples / n) for k in range(n + 1)]
      return list(zip(bounds[:-1], bounds[1:]))
    raise ValueError(f"a {seconds:.3f} s clip is over max_seconds {self.max_seconds:g} under "
                     f"long_clips 'drop': check() drops it before pieces() is asked")


_COUNTERS = ("too_short", "too_long", "capped", "seconds_cut_by_cap", "windowed", "windows")


class DurationCounts:
  """Per-source counts of what the rule did: dropped (too_short, too_long), capped (and seconds cut), windowed."""

  def __init__(self, rule: DurationRule):
    self.rule = rule
    self.sources: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

  def dropped(self, source: str, kind: str) -> None:
    self.sources[source][kind] += 1

  def kept(self, source: str, num_samples: int, pieces: list[tuple[int, int]], sample_rate: int) -> None:
    if len(pieces) > 1:
      self.sources[source]["windowed"] += 1
      self.sources[source]["windows"] += len(pieces)
    elif pieces[0][1] - pieces[0][0] < num_samples:
      self.sources[source]["capped"] += 1
      self.sources[source]["seconds_cut_by_cap"] += (num_samples - (pieces[0][1] - pieces[0][0])) / sample_rate

  def _totals(self, counter) -> dict:
    return {k: (round(float(counter[k]), 3) if k.startswith("seconds") else int(counter[k])) for k in _COUNTERS}

  def summary(self) -> dict:
    total = sum(self.sources.values(), collections.Counter())
    return {"rule": self.rule.to_json(), **self._totals(total),
            "sources": {s: self._totals(c) for s, c in sorted(self.sources.items())}}

  def lines(self) -> list[str]:
    s = self.summary()
    return [f"  durations ({self.rule.describe()}): dropped {s['too_short']} too short, {s['too_long']} too long; "
            f"capped {s['capped']} (-{s['seconds_cut_by_cap']:.1f} s); windowed {s['windowed']} into "
            f"{s['windows']} windows"]


def add_arguments(parser) -> None:
  """--min-seconds, --max-seconds, --long-clips (prepare and validate)."""
  parser.add_argument("--min-seconds", type=float, default=STUDY_MIN_SECONDS,
                      help=f"drop clips shorter than this (default {STUDY_MIN_SECONDS:g}, the study's; 0: no minimum)")
  parser.add_argument("--max-seconds", type=float, default=STUDY_MAX_SECONDS,
                      help=f"clips longer than this are handled by --long-clips (default {STUDY_MAX_SECONDS:g}, the "
                           f"study's; inf: no maximum)")
  parser.add_argument("--long-clips", choices=LONG_CLIP_POLICIES, default="drop",
                      help="drop (the study's), cap (keep the first --max-seconds) or window (cut into windows of at "
                           "most --max-seconds, each a clip with the record's captions)")


def from_arguments(args, parser) -> DurationRule:
  """The DurationRule of parsed add_arguments() options; a bad combination is a parser error (exit 2)."""
  try:
    return DurationRule(args.min_seconds, args.max_seconds, args.long_clips)
  except ValueError as e:
    parser.error(str(e))
