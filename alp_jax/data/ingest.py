"""One record from manifest line to 16 kHz int16 samples, shared by validate and prepare."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from alp_jax.audio import io as audio_io
from alp_jax.data import durations as durations_lib
from alp_jax.data import manifest as mf


@dataclasses.dataclass
class Ingested:
  record: mf.Record
  audio: np.ndarray | None  # int16 at 16 kHz (None when only checking)
  audio_hash: str | None    # sha1 of the int16 bytes: exact duplicates across sources
  seconds: float            # the decoded duration (samples / the file's own rate), what the duration rule judges


def ingest(record: mf.Record, *, keep_audio: bool = True, sample_rate: int = audio_io.TARGET_SAMPLE_RATE,
           durations: durations_lib.DurationRule | None = None) -> Ingested | mf.Problem:
  """Decodes, checks, downmixes, resamples and quantises one record; a Problem instead of any exception.

  durations: a clip this rule drops (too short, or too long under long_clips "drop") becomes its Problem; None
  applies no rule. Capping and windowing are prepare's (they need the resampled samples)."""
  problem = mf.check_file(record)
  if problem:
    return problem
  declared = audio_io.header_seconds(record.audio_path)  # a 3-hour cap checked before decoding, not after
  if declared is not None and declared > mf.MAX_SECONDS:
    return mf.Problem(mf.ABSURD_DURATION, f"{record.audio_path}: header says {declared:.0f} s, over the "
                      f"{mf.MAX_SECONDS:.0f} s cap (not decoded)", record.manifest, record.line, record.id)
  try:
    samples, source_rate = audio_io.decode(record.audio_path)
  except audio_io.AudioDecodeError as e:
    return mf.Problem(mf.UNDECODABLE_AUDIO, str(e)[:300], record.manifest, record.line, record.id)
  except OSError as e:
    return mf.Problem(mf.UNREADABLE_FILE, f"{record.audio_path}: {e}"[:300], record.manifest, record.line, record.id)
  problem = mf.check_audio(record, samples, source_rate)
  if problem:
    return problem
  seconds = samples.shape[0] / source_rate
  problem = durations.check(record, seconds) if durations is not None else None
  if problem:
    return problem
  if not keep_audio:
    return Ingested(record, None, None, seconds)
  audio = audio_io.to_int16(audio_io.resample(audio_io.to_mono(samples), source_rate, sample_rate))
  if not np.any(audio):
    return mf.Problem(mf.SILENT, f"{record.audio_path} is silent after downmix/resampling", record.manifest,
                      record.line, record.id)
  return Ingested(record, audio, hashlib.sha1(audio.tobytes()).hexdigest(), seconds)
