"""The demo corpus's three synthesisers: speech (espeak-ng), music (fluidsynth + TimGM6mb), sound (sox).

A clip is described by a plain dict of its TRUE attributes (voice, sentence, instrument, note, sound type,
levels, ...). `sample_*` draws those attributes from a numpy Generator; `render_clip` turns them into a wav
file with the system tools; the same dict drives the captions (demo_captions.py) and the labels, so what a
caption says is what the audio holds.

Audio is kept at each tool's own rate on purpose (espeak-ng 22.05 kHz mono, fluidsynth 44.1 kHz stereo,
sox 16-48 kHz mono or stereo, some 24-bit) so the prepare step's decoding and resampling are exercised.

Every tool is deterministic here: espeak-ng and fluidsynth always were; sox runs with -R (repeatable
random numbers) and -D (no dither), and noise clips differ from each other by where the noise is cut.

Dimension letters: S samples, C channels.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
BINARIES = ("espeak-ng", "sox", "fluidsynth")
DOMAINS = ("speech", "music", "sound", "mix")


class SynthesisError(RuntimeError):
  """A tool failed on one clip; carries the command line and the tool's stderr."""

  def __init__(self, command: list[str], stderr: str):
    self.command = command
    self.stderr = stderr.strip()
    super().__init__(f"`{' '.join(command)[:300]}` failed: {self.stderr[-800:] or '(no stderr)'}")


def _run(command: list) -> None:
  command = [str(c) for c in command]
  try:
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=120)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise SynthesisError(command, str(e)) from e
  if done.returncode != 0:
    raise SynthesisError(command, done.stderr or f"exit status {done.returncode}")


def _read(path: Path) -> tuple[np.ndarray, int]:
  """A rendered file as float32 (S, C) and its sample rate."""
  audio, rate = sf.read(path, dtype="float32", always_2d=True)
  if audio.shape[0] == 0:
    raise SynthesisError([str(path)], "the tool wrote an empty file")
  return audio, rate


def _fit(audio: np.ndarray, rate: int, seconds: float, lead_seconds: float = 0.0) -> np.ndarray:
  """(S, C) -> (round(seconds * rate), C): `lead_seconds` of silence first, then cut or zero-padded."""
  total = int(round(seconds * rate))
  lead = int(round(lead_seconds * rate))
  out = np.zeros((total, audio.shape[1]), np.float32)
  body = audio[:max(total - lead, 0)]
  out[lead:lead + body.shape[0]] = body
  return out


def _fade(audio: np.ndarray, rate: int, in_seconds: float, out_seconds: float) -> np.ndarray:
  """Linear fade in and out over the given times, in place on (S, C)."""
  n_in, n_out = min(int(in_seconds * rate), len(audio)), min(int(out_seconds * rate), len(audio))
  if n_in:
    audio[:n_in] *= np.linspace(0.0, 1.0, n_in, dtype=np.float32)[:, None]
  if n_out:
    audio[len(audio) - n_out:] *= np.linspace(1.0, 0.0, n_out, dtype=np.float32)[:, None]
  return audio


def _peak_to(audio: np.ndarray, peak_dbfs: float) -> np.ndarray:
  peak = float(np.max(np.abs(audio)))
  if peak <= 0.0:
    raise SynthesisError(["normalise"], "the rendered audio is all zeros")
  return audio * np.float32(10 ** (peak_dbfs / 20) / peak)


def _rms(audio: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


# ----------------------------------------------------------------------------------------------------------
# Speech: espeak-ng voices x variants, rates 120-220 wpm, pitches 20-80.

@dataclasses.dataclass(frozen=True)
class Speaker:
  voice: str      # espeak-ng language voice
  variant: str    # espeak-ng variant (!v/m1 ... !v/f5)
  gender: str
  accent: str     # how a caption names the accent
  language: str   # language of what this speaker says
  base_pitch: int

  @property
  def id(self) -> str:
    return f"{self.voice}+{self.variant}"


# A fixed roster, so speaker labels mean the same thing for every seed. Voices and variants are those
# `espeak-ng --voices` and `espeak-ng --voices=variant` list on Debian (espeak-ng 1.51). Some speakers read
# English with another language's voice: English with a German, French, Spanish or Italian accent.
SPEAKERS = (
    Speaker("en-us", "m1", "male", "American", "en", 38),
    Speaker("en-us", "f2", "female", "American", "en", 64),
    Speaker("en-us", "m3", "male", "American", "en", 28),
    Speaker("en-us-nyc", "f4", "female", "New York", "en", 58),
    Speaker("en-gb", "f1", "female", "British", "en", 70),
    Speaker("en-gb", "m7", "male", "British", "en", 45),
    Speaker("en-gb-scotland", "m2", "male", "Scottish", "en", 50),
    Speaker("en-gb-x-rp", "f3", "female", "Received Pronunciation", "en", 62),
    Speaker("en-029", "m4", "male", "Caribbean", "en", 40),
    Speaker("de", "f3", "female", "German", "de", 66),
    Speaker("de", "m5", "male", "German", "de", 34),
    Speaker("fr-fr", "f5", "female", "French", "fr", 72),
    Speaker("fr-fr", "m6", "male", "French", "fr", 42),
    Speaker("es", "f1", "female", "Spanish", "es", 60),
    Speaker("es", "m8", "male", "Spanish", "es", 30),
    Speaker("it", "f4", "female", "Italian", "it", 68),
    Speaker("it", "m2", "male", "Italian", "it", 46),
    Speaker("pt-br", "m1", "male", "Brazilian", "pt", 40),
    Speaker("nl", "f2", "female", "Dutch", "nl", 56),
    Speaker("de", "m6", "male", "German", "en", 36),
    Speaker("fr-fr", "f2", "female", "French", "en", 63),
    Speaker("es", "m3", "male", "Spanish", "en", 44),
    Speaker("it", "f1", "female", "Italian", "en", 74),
)
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch"}

SENTENCES = {
    "en": (
        "Good morning.", "Thank you very much.", "Where is the station?", "Please close the door.",
        "It is raining again.", "I will call you tomorrow.", "The train leaves at nine.",
        "Could you pass the salt, please?", "My brother plays the violin.", "We are almost there.",
        "The coffee is too hot to drink.", "Turn left at the next corner.", "She bought three red apples.",
        "The meeting has been moved to Friday afternoon.", "Dogs were barking all night long.",
        "Remember to water the plants on Sunday.", "The library closes early during the holidays.",
        "He forgot his umbrella at the restaurant.", "A cold wind is blowing from the north.",
        "Our flight was delayed by two hours.", "The children are playing in the garden.",
        "I have never seen so many stars in the sky.", "Please speak a little more slowly.",
        "The soup needs a pinch of salt and pepper.", "Can you hear the birds singing outside?",
        "The old bridge was built more than a century ago.", "Let us meet at the café near the park.",
        "The results will be announced next week.", "He reads the newspaper every morning before work.",
        "This road leads to a small fishing village by the sea.", "Keep your ticket until the end of the journey.",
        "The museum is free on the first Sunday of each month.", "Nobody knew the answer to the last question.",
        "Attention please, the platform has changed.", "Happy birthday!", "See you later.",
        "The weather will be sunny with a light breeze.", "Mix the flour and the eggs in a large bowl.",
        "Seven plus five is twelve.", "The engine started on the first try.",
    ),
    "de": (
        "Guten Morgen.", "Vielen Dank.", "Wo ist der Bahnhof?", "Das Wetter ist heute sehr schön.",
        "Ich komme morgen um acht Uhr.", "Der Zug hat leider Verspätung.", "Können Sie mir bitte helfen?",
        "Wir gehen am Wochenende in die Berge.", "Die Kinder spielen im Garten.",
        "Das Museum ist montags geschlossen.", "Mein Bruder wohnt in einer kleinen Stadt am See.",
    ),
    "fr": (
        "Bonjour.", "Merci beaucoup.", "Où est la gare?", "Il fait très beau aujourd'hui.",
        "Je vous appelle demain matin.", "Le train part à neuf heures.", "Pouvez-vous parler plus lentement?",
        "Nous allons au marché samedi.", "Les enfants jouent dans le jardin.",
        "La bibliothèque ferme à six heures.", "Mon frère habite dans une petite ville au bord de la mer.",
    ),
    "es": (
        "Buenos días.", "Muchas gracias.", "¿Dónde está la estación?", "Hoy hace mucho calor.",
        "Te llamo mañana por la tarde.", "El tren sale a las nueve.", "¿Puede hablar más despacio, por favor?",
        "Vamos a la playa el domingo.", "Los niños juegan en el parque.",
        "El museo está cerrado los lunes.", "Mi hermana vive en un pueblo pequeño cerca del mar.",
    ),
    "it": (
        "Buongiorno.", "Grazie mille.", "Dov'è la stazione?", "Oggi fa molto freddo.",
        "Ti chiamo domani mattina.", "Il treno parte alle nove.", "Può parlare più lentamente, per favore?",
        "Andiamo al mercato sabato.", "I bambini giocano nel giardino.",
        "Il museo è chiuso il lunedì.", "Mio fratello abita in una piccola città vicino al mare.",
    ),
    "pt": (
        "Bom dia.", "Muito obrigado.", "Onde fica a estação?", "Hoje está muito calor.",
        "Eu te ligo amanhã de manhã.", "O ônibus sai às nove horas.", "As crianças brincam no parque.",
        "Vamos à praia no domingo.", "Minha irmã mora numa cidade pequena perto do mar.",
    ),
    "nl": (
        "Goedemorgen.", "Dank je wel.", "Waar is het station?", "Het regent vandaag de hele dag.",
        "Ik bel je morgen terug.", "De trein vertrekt om negen uur.", "De kinderen spelen in de tuin.",
        "We gaan zaterdag naar de markt.", "Mijn broer woont in een klein dorp aan zee.",
    ),
}
SPEECH_RATE = 22050  # espeak-ng's output rate


def _speech_seconds(text: str, rate_wpm: int) -> float:
  """A rough spoken length, used only to pick sentences that fit a clip."""
  return len(text.split()) * 60.0 / rate_wpm + 0.3


def sample_speech(rng: np.random.Generator, seconds: float, speaker: Speaker,
                  sentences: dict[str, tuple[str, ...]] | None = None) -> dict:
  """Attributes of a speech clip of about `seconds` by `speaker`: sentence, rate, pitch, timing.

  The sentence comes from `sentences[speaker.language]` (default SENTENCES, the corpus's pool; the demo's
  probe tasks pass a held-out pool).
  """
  rate_wpm = int(rng.integers(120, 221))
  pitch = int(np.clip(speaker.base_pitch + rng.integers(-6, 7), 20, 80))
  lead = float(rng.uniform(0.05, 0.3))
  sentences = (SENTENCES if sentences is None else sentences)[speaker.language]
  fitting = [s for s in sentences if _speech_seconds(s, rate_wpm) <= seconds - lead]
  text = (fitting[int(rng.integers(len(fitting)))] if fitting
          else min(sentences, key=lambda s: len(s.split())))
  return {"domain": "speech", "speaker": speaker.id, "voice": speaker.voice, "variant": speaker.variant,
          "gender": speaker.gender, "accent": speaker.accent, "language": speaker.language, "text": text,
          "rate_wpm": rate_wpm, "pitch": pitch, "lead_seconds": round(lead, 3), "seconds": round(seconds, 3),
          "peak_dbfs": round(float(rng.uniform(-9.0, -2.0)), 2)}


def _render_speech_raw(attrs: dict, work_dir: Path) -> np.ndarray:
  """espeak-ng output as float (S, 1) at SPEECH_RATE, trailing silence kept."""
  path = work_dir / "speech.wav"
  _run(["espeak-ng", "-v", f"{attrs['voice']}+{attrs['variant']}", "-s", attrs["rate_wpm"], "-p", attrs["pitch"],
        "-w", path, attrs["text"]])
  audio, rate = _read(path)
  if rate != SPEECH_RATE:
    raise SynthesisError(["espeak-ng"], f"expected {SPEECH_RATE} Hz output, got {rate} Hz")
  return audio


def render_speech(attrs: dict, work_dir: Path) -> tuple[np.ndarray, int]:
  """(S, 1) float and rate: the sentence after a short lead, padded to the clip length (never cut)."""
  speech = _render_speech_raw(attrs, work_dir)
  seconds = max(attrs["seconds"], attrs["lead_seconds"] + speech.shape[0] / SPEECH_RATE + 0.05)
  audio = _fit(speech, SPEECH_RATE, seconds, attrs["lead_seconds"])
  return _peak_to(audio, attrs["peak_dbfs"]), SPEECH_RATE


# ----------------------------------------------------------------------------------------------------------
# Music: General MIDI programs rendered by fluidsynth with the TimGM6mb soundfont.

@dataclasses.dataclass(frozen=True)
class Instrument:
  program: int  # General MIDI program, 0-based
  name: str
  family: str
  low: int      # lowest MIDI note used as a root
  high: int     # highest MIDI note used as a root


INSTRUMENTS = (
    Instrument(0, "acoustic grand piano", "piano", 40, 76), Instrument(1, "bright piano", "piano", 45, 76),
    Instrument(4, "electric piano", "piano", 45, 72),
    Instrument(11, "vibraphone", "mallet percussion", 53, 77), Instrument(12, "marimba", "mallet percussion", 48, 77),
    Instrument(13, "xylophone", "mallet percussion", 60, 84), Instrument(8, "celesta", "mallet percussion", 60, 84),
    Instrument(16, "drawbar organ", "organ", 43, 72), Instrument(19, "church organ", "organ", 36, 72),
    Instrument(21, "accordion", "organ", 48, 72),
    Instrument(24, "nylon-string guitar", "guitar", 43, 67), Instrument(25, "steel-string guitar", "guitar", 43, 67),
    Instrument(27, "clean electric guitar", "guitar", 43, 67),
    Instrument(29, "overdriven guitar", "guitar", 40, 64),
    Instrument(32, "acoustic bass", "bass", 28, 48), Instrument(33, "electric bass", "bass", 28, 48),
    Instrument(38, "synth bass", "bass", 28, 48),
    Instrument(40, "violin", "strings", 55, 79), Instrument(41, "viola", "strings", 48, 72),
    Instrument(42, "cello", "strings", 36, 60), Instrument(48, "string ensemble", "strings", 43, 72),
    Instrument(46, "harp", "strings", 43, 79),
    Instrument(56, "trumpet", "brass", 55, 77), Instrument(57, "trombone", "brass", 40, 65),
    Instrument(60, "french horn", "brass", 41, 65), Instrument(61, "brass section", "brass", 45, 70),
    Instrument(64, "soprano saxophone", "reed", 56, 80), Instrument(66, "tenor saxophone", "reed", 44, 69),
    Instrument(68, "oboe", "reed", 58, 82), Instrument(71, "clarinet", "reed", 50, 79),
    Instrument(73, "flute", "pipe", 60, 86), Instrument(72, "piccolo", "pipe", 74, 93),
    Instrument(75, "pan flute", "pipe", 60, 84), Instrument(79, "ocarina", "pipe", 60, 84),
    Instrument(80, "square lead synth", "synth", 48, 76), Instrument(81, "sawtooth lead synth", "synth", 48, 76),
    Instrument(88, "new age pad", "synth", 48, 72), Instrument(89, "warm pad", "synth", 48, 72),
)
DRUM_KIT = "drum kit"
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CHORDS = {  # quality -> semitones above the root
    "major": (0, 4, 7), "minor": (0, 3, 7), "dominant seventh": (0, 4, 7, 10), "major seventh": (0, 4, 7, 11),
    "minor seventh": (0, 3, 7, 10), "diminished": (0, 3, 6), "augmented": (0, 4, 8), "suspended fourth": (0, 5, 7),
    "power": (0, 7, 12),
}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11, 12), "minor": (0, 2, 3, 5, 7, 8, 10, 12)}
MUSIC_PATTERNS = ("note", "chord", "arpeggio", "repeated note", "scale", "drums")
MUSIC_RATE = 44100
_TICKS_PER_SECOND = 960  # 480 ticks per quarter note at the 120 bpm file tempo


def note_name(midi: int) -> str:
  """MIDI note number -> scientific pitch name (60 -> 'C4')."""
  return f"{PITCH_CLASSES[midi % 12]}{midi // 12 - 1}"


def note_hz(midi: int) -> float:
  return 440.0 * 2.0 ** ((midi - 69) / 12)


def sample_music(rng: np.random.Generator, seconds: float, pattern: str) -> dict:
  """Attributes of a music clip: instrument, pattern, root note, chord or scale, tempo, loudness."""
  attrs = {"domain": "music", "pattern": pattern, "seconds": round(seconds, 3),
           "tempo_bpm": int(rng.integers(60, 181)), "velocity": int(rng.integers(45, 121)),
           "peak_dbfs": round(float(rng.uniform(-8.0, -1.0)), 2)}
  if pattern == "drums":
    return {**attrs, "instrument": DRUM_KIT, "family": "drums", "program": None}
  inst = INSTRUMENTS[int(rng.integers(len(INSTRUMENTS)))]
  root = int(rng.integers(inst.low, inst.high + 1))
  attrs.update(instrument=inst.name, family=inst.family, program=inst.program, root=root)
  if pattern in ("chord", "arpeggio"):
    attrs["quality"] = list(CHORDS)[int(rng.integers(len(CHORDS)))]
  elif pattern == "scale":
    attrs["quality"] = list(SCALES)[int(rng.integers(len(SCALES)))]
  return attrs


def _music_notes(attrs: dict) -> list[tuple[float, float, int, int]]:
  """(start s, end s, channel, MIDI note) of every note in the clip."""
  end = max(attrs["seconds"] - 0.35, 0.3)
  beat = 60.0 / attrs["tempo_bpm"]
  starts = np.arange(0.05, max(end - 0.05, 0.06), beat)  # at least one beat, however short the clip
  pattern = attrs["pattern"]
  if pattern == "drums":  # a rock beat: kick on 1 and 3, snare on 2 and 4, closed hi-hat on every eighth
    notes = []
    for i, t in enumerate(starts):
      notes.append((t, t + 0.1, 9, 36 if i % 2 == 0 else 38))
      notes += [(t, t + 0.05, 9, 42), (t + beat / 2, t + beat / 2 + 0.05, 9, 42)]
    return [n for n in notes if n[0] < end]
  root = attrs["root"]
  if pattern == "note":
    return [(0.05, end, 0, root)]
  if pattern == "chord":
    return [(0.05, end, 0, root + k) for k in CHORDS[attrs["quality"]]]
  if pattern == "repeated note":
    return [(t, t + 0.7 * beat, 0, root) for t in starts]
  steps = CHORDS[attrs["quality"]] if pattern == "arpeggio" else SCALES[attrs["quality"]]
  return [(t, t + 0.9 * beat, 0, root + steps[i % len(steps)]) for i, t in enumerate(starts)]


def _vlq(value: int) -> bytes:
  """MIDI variable-length quantity."""
  out = [value & 0x7F]
  value >>= 7
  while value:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  return bytes(reversed(out))


def midi_file(notes: list[tuple[float, float, int, int]], program: int | None, velocity: int) -> bytes:
  """A format-0 Standard MIDI File (120 bpm, 480 ticks per quarter) playing `notes` on `program`."""
  events = []  # (tick, order, message); note-offs (order 0) before note-ons at the same tick
  for start, end, channel, key in notes:
    events.append((int(round(start * _TICKS_PER_SECOND)), 1, bytes([0x90 | channel, key, velocity])))
    events.append((int(round(end * _TICKS_PER_SECOND)), 0, bytes([0x80 | channel, key, 0])))
  events.sort(key=lambda e: (e[0], e[1]))
  track = _vlq(0) + bytes([0xFF, 0x51, 3]) + (500_000).to_bytes(3, "big")  # 500000 us per quarter = 120 bpm
  if program is not None:
    track += _vlq(0) + bytes([0xC0, program])
  tick = 0
  for when, _, message in events:
    track += _vlq(when - tick) + message
    tick = when
  track += _vlq(0) + bytes([0xFF, 0x2F, 0])
  header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
  return header + b"MTrk" + struct.pack(">I", len(track)) + track


def render_music(attrs: dict, work_dir: Path, rate: int = MUSIC_RATE, stereo: bool = True) -> tuple[np.ndarray, int]:
  """(S, C) float and rate: fluidsynth's rendering cut to the clip length with a short fade-out."""
  midi_path, wav_path = work_dir / "music.mid", work_dir / "music.wav"
  midi_path.write_bytes(midi_file(_music_notes(attrs), attrs["program"], attrs["velocity"]))
  _run(["fluidsynth", "-ni", "-q", "-g", "1.0", "-o", "audio.file.format=float", "-F", wav_path, "-r", rate,
        SOUNDFONT, midi_path])
  audio, got_rate = _read(wav_path)
  if got_rate != rate:
    raise SynthesisError(["fluidsynth"], f"expected {rate} Hz output, got {got_rate} Hz")
  if not stereo:
    audio = audio.mean(axis=1, keepdims=True)
  audio = _fade(_fit(audio, rate, attrs["seconds"]), rate, 0.0, 0.25)
  return _peak_to(audio, attrs["peak_dbfs"]), rate


# ----------------------------------------------------------------------------------------------------------
# Sound: sox synth tones, noises, sweeps, alarms and textures, alone or an event over a texture.

EVENT_SOUNDS = ("tone", "chord", "sweep", "beeping", "siren", "phone ringing", "ticking")
TEXTURE_SOUNDS = ("noise", "rain", "wind", "engine", "waves", "hum")
SOUND_TYPES = EVENT_SOUNDS + TEXTURE_SOUNDS
SOUND_RATES = (16000, 16000, 22050, 32000, 48000)


def _draw_sound(rng: np.random.Generator, sound_type: str) -> dict:
  """Parameters of one sox-synthesised sound of `sound_type` (all drawn here, so rendering is pure)."""
  def u(lo: float, hi: float, digits: int = 1) -> float:
    return round(float(rng.uniform(lo, hi)), digits)

  def pick(options: tuple):
    return options[int(rng.integers(len(options)))]

  p: dict = {"sound_type": sound_type}
  if sound_type == "tone":
    p.update(wave=pick(("sine", "square", "sawtooth", "triangle")), hz=u(150, 2000, 0))
  elif sound_type == "chord":
    root = int(rng.integers(48, 73))
    quality = pick(("major", "minor", "diminished", "suspended fourth"))
    p.update(wave=pick(("sine", "triangle")), root=root, quality=quality)
  elif sound_type == "sweep":
    lo, hi = u(100, 500, 0), u(1500, 4000, 0)
    p.update(direction=pick(("rising", "falling")), lo_hz=lo, hi_hz=hi, law=pick(("linear", "exponential")))
  elif sound_type == "beeping":
    p.update(hz=u(600, 3000, 0), beep_seconds=u(0.06, 0.3, 2), gap_seconds=u(0.05, 0.5, 2),
             wave=pick(("sine", "square")))
  elif sound_type == "siren":
    p.update(lo_hz=u(450, 800, 0), hi_hz=u(1000, 1800, 0), cycle_seconds=u(0.4, 2.0, 2))
  elif sound_type == "phone ringing":
    p.update(hz=pick(((440, 480), (400, 450), (425, 475))), ring_seconds=u(0.3, 0.5, 2), gap_seconds=u(0.15, 0.4, 2))
  elif sound_type == "ticking":
    p.update(hz=u(1500, 4000, 0), period_seconds=u(0.25, 1.0, 2))
  elif sound_type == "noise":
    p.update(colour=pick(("white", "pink", "brown")))
  elif sound_type == "rain":
    p.update(highpass_hz=u(800, 3000, 0), flutter_hz=u(8, 25), depth=u(30, 70, 0))
  elif sound_type == "wind":
    p.update(center_hz=u(250, 900, 0), gust_hz=u(0.15, 0.6, 2), depth=u(50, 90, 0))
  elif sound_type == "engine":
    p.update(hz=u(30, 90), rumble_hz=u(4, 25), lowpass_hz=u(400, 1200, 0))
  elif sound_type == "waves":
    p.update(lowpass_hz=u(800, 3000, 0), swell_hz=u(0.1, 0.3, 2), depth=u(80, 95, 0))
  elif sound_type == "hum":
    p.update(hz=u(49, 61))
  else:
    raise ValueError(f"unknown sound type {sound_type!r}; known: {SOUND_TYPES}")
  if sound_type in TEXTURE_SOUNDS:
    p["noise_offset"] = u(0.0, 20.0, 3)  # where the repeatable sox noise is cut: different noise per clip
  return p


def sample_sound(rng: np.random.Generator, seconds: float, sound_type: str) -> dict:
  """Attributes of a sound clip: the sound, sometimes over a background texture, rate, channels, level."""
  attrs = {"domain": "sound", "seconds": round(seconds, 3), **_draw_sound(rng, sound_type),
           "sample_rate": SOUND_RATES[int(rng.integers(len(SOUND_RATES)))], "channels": int(rng.integers(1, 3)),
           "peak_dbfs": round(float(rng.uniform(-14.0, -1.0)), 2), "background": None}
  if sound_type in EVENT_SOUNDS and rng.uniform() < 0.4:
    texture = TEXTURE_SOUNDS[int(rng.integers(len(TEXTURE_SOUNDS)))]
    attrs["background"] = {**_draw_sound(rng, texture), "below_db": round(float(rng.uniform(6.0, 20.0)), 1)}
  return attrs


def _sox_effects(p: dict, seconds: float) -> list:
  """The sox effect chain (after `sox -n out.wav`) that synthesises sound `p` for `seconds`."""
  kind = p["sound_type"]
  if kind == "tone":
    return ["synth", seconds, p["wave"], p["hz"]]
  if kind == "chord":
    freqs = [note_hz(p["root"] + k) for k in CHORDS[p["quality"]]]
    return ["synth", seconds, p["wave"], f"{freqs[0]:.2f}"] + sum(
        ([p["wave"], "mix", f"{f:.2f}"] for f in freqs[1:]), [])
  if kind == "sweep":
    a, b = (p["lo_hz"], p["hi_hz"]) if p["direction"] == "rising" else (p["hi_hz"], p["lo_hz"])
    return ["synth", seconds, "sine", f"{a:g}{':' if p['law'] == 'linear' else '/'}{b:g}"]
  if kind == "beeping":
    repeats = int(seconds / (p["beep_seconds"] + p["gap_seconds"])) + 1
    return ["synth", p["beep_seconds"], p["wave"], p["hz"], "fade", "t", 0.005, 0, 0.005,
            "pad", 0, p["gap_seconds"], "repeat", repeats]
  if kind == "siren":  # chained up and down sweeps
    half = p["cycle_seconds"] / 2
    chain: list = []
    for _ in range(int(seconds / p["cycle_seconds"]) + 1):
      chain += [":", "synth", half, "sine", f"{p['lo_hz']:g}:{p['hi_hz']:g}",
                ":", "synth", half, "sine", f"{p['hi_hz']:g}:{p['lo_hz']:g}"]
    return chain[1:]
  if kind == "phone ringing":
    repeats = int(seconds / (p["ring_seconds"] + p["gap_seconds"])) + 1
    return ["synth", p["ring_seconds"], "sine", p["hz"][0], "sine", "mix", p["hz"][1], "fade", "t", 0.01, 0, 0.01,
            "pad", 0, p["gap_seconds"], "repeat", repeats]
  if kind == "ticking":
    return ["synth", 0.01, "square", p["hz"], "fade", "t", 0, 0, 0.008, "pad", 0, p["period_seconds"] - 0.01,
            "repeat", int(seconds / p["period_seconds"]) + 1]
  if kind == "hum":
    hz = p["hz"]
    return ["synth", seconds, "sine", hz, "sine", "mix", 2 * hz, "sine", "mix", 3 * hz, "sawtooth", "mix", 4 * hz,
            "lowpass", 400]
  if kind == "engine":
    return ["synth", seconds, "sawtooth", p["hz"], "sine", "amod", p["rumble_hz"], 60,
            "lowpass", p["lowpass_hz"]]
  noise = {"noise": f"{p.get('colour', 'pink')}noise", "rain": "pinknoise", "wind": "brownnoise",
           "waves": "pinknoise"}[kind]
  chain = ["synth", seconds + p["noise_offset"], noise, "trim", p["noise_offset"]]
  if kind == "rain":
    chain += ["highpass", p["highpass_hz"], "tremolo", p["flutter_hz"], p["depth"]]
  elif kind == "wind":
    chain += ["bandpass", p["center_hz"], "1.5o", "tremolo", p["gust_hz"], p["depth"]]
  elif kind == "waves":
    chain += ["lowpass", p["lowpass_hz"], "tremolo", p["swell_hz"], p["depth"]]
  return chain


def _render_sox(p: dict, seconds: float, rate: int, work_dir: Path, name: str) -> np.ndarray:
  """Sound `p` as float (S, 1) at `rate`, exactly `seconds` long, peak at 0 dBFS."""
  path = work_dir / f"{name}.wav"
  _run(["sox", "-R", "-D", "-q", "-n", "-r", rate, "-c", 1, "-b", 32, "-e", "floating-point", path]
       + _sox_effects(p, seconds))
  audio = _fade(_fit(_read(path)[0], rate, seconds), rate, 0.01, 0.02)
  return _peak_to(audio, 0.0)


def render_sound(attrs: dict, work_dir: Path) -> tuple[np.ndarray, int]:
  """(S, C) float and rate: the sound, plus its background texture `below_db` under it (RMS), at its level."""
  rate, seconds = attrs["sample_rate"], attrs["seconds"]
  audio = _render_sox(attrs, seconds, rate, work_dir, "sound")
  background = attrs["background"]
  if background is not None:
    texture = _render_sox(background, seconds, rate, work_dir, "background")
    audio = audio + texture * np.float32(_rms(audio) / _rms(texture) * 10 ** (-background["below_db"] / 20))
  if attrs["channels"] == 2:
    audio = np.concatenate([audio, audio * np.float32(0.8)], axis=1)  # (S, 2): slightly panned left
  return _peak_to(audio, attrs["peak_dbfs"]), rate


# ----------------------------------------------------------------------------------------------------------
# Mix: a speech clip over a sox background at a known signal-to-noise ratio.

def sample_mix(rng: np.random.Generator, seconds: float, speaker: Speaker, background_type: str) -> dict:
  """Attributes of speech over a background sound (texture or event) at an SNR of 0-20 dB."""
  speech = sample_speech(rng, seconds, speaker)
  background = {**_draw_sound(rng, background_type), "snr_db": round(float(rng.uniform(0.0, 20.0)), 1)}
  return {**speech, "domain": "mix", "background": background}


def render_mix(attrs: dict, work_dir: Path) -> tuple[np.ndarray, int]:
  """(S, 1) float at SPEECH_RATE: speech plus the background scaled to the SNR over the speech's active part."""
  speech, rate = render_speech({**attrs, "peak_dbfs": 0.0}, work_dir)
  background = _render_sox(attrs["background"], speech.shape[0] / rate, rate, work_dir, "background")
  active = np.abs(speech[:, 0]) > 1e-3
  speech_rms = _rms(speech[active]) if active.any() else _rms(speech)
  scale = speech_rms / _rms(background) * 10 ** (-attrs["background"]["snr_db"] / 20)
  return _peak_to(speech + background * np.float32(scale), attrs["peak_dbfs"]), rate


RENDERERS = {"speech": render_speech, "music": render_music, "sound": render_sound, "mix": render_mix}


def render_clip(attrs: dict, out_path: str | os.PathLike, work_dir: str | os.PathLike) -> float:
  """Renders a clip's attributes to `out_path` (wav; 24-bit at 48 kHz, else 16-bit). Returns its seconds."""
  audio, rate = RENDERERS[attrs["domain"]](attrs, Path(work_dir))
  subtype = "PCM_24" if rate == 48000 else "PCM_16"
  sf.write(out_path, np.clip(audio, -1.0, 1.0), rate, subtype=subtype)
  return audio.shape[0] / rate
