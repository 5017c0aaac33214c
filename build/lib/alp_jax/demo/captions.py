"""Captions for the demo corpus, written from each clip's TRUE attributes (see demo_synth.py).

Like CaptionStew, a clip carries captions in several styles: a content description ("a woman says '...'
quickly"), comma-separated tags ("female, high pitch, fast pace, German accent"), a longer descriptive
paragraph (music- or voice-style description), and a short label-like phrase. Every style has several
templates and synonyms drawn from the clip's Generator, so the tokenizer sees varied wording; the facts
stated never go beyond the attributes.

  clip_captions(attrs, rng) -> 3 to 5 distinct captions
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from alp_jax.demo import synth as ds


def _pick(rng: np.random.Generator, options: Sequence):
  return options[int(rng.integers(len(options)))]


def _a(phrase: str) -> str:
  return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _sentence(rng: np.random.Generator, text: str) -> str:
  """Capitalised with a full stop, or left lower case without one: both occur in real caption sets."""
  text = " ".join(text.split())
  return text[0].upper() + text[1:] + "." if rng.uniform() < 0.6 else text


# ----------------------------------------------------------------------------------------------------------
# Speech attributes in words.

def _pace(rate_wpm: int) -> str:
  return "slow" if rate_wpm < 150 else "fast" if rate_wpm > 190 else "moderate"


def _pitch(pitch: int) -> str:
  return "low" if pitch < 38 else "high" if pitch > 60 else "medium"


_PACE_ADVERBS = {"slow": ("slowly", "at a slow pace", "in an unhurried way", "deliberately"),
                 "moderate": ("at a moderate pace", "at a normal speed", "at an even pace", "steadily"),
                 "fast": ("quickly", "rapidly", "at a fast pace", "in a hurry")}
_PITCH_WORDS = {"low": ("low-pitched", "deep", "low"), "medium": ("medium-pitched", "mid-range", "moderately pitched"),
                "high": ("high-pitched", "high", "bright")}
_PERSON = {"male": ("a man", "a male speaker", "a male voice", "a guy"),
           "female": ("a woman", "a female speaker", "a female voice", "a lady")}
_SPEAK_VERBS = ("says", "speaks the words", "reads out", "announces", "pronounces", "utters")


def _quote(attrs: dict) -> str:
  """The spoken sentence in quotes, without a final full stop or exclamation mark (questions keep theirs)."""
  return "'" + attrs["text"].rstrip(".!") + "'"


def _speech_language(attrs: dict) -> str:
  return ds.LANGUAGE_NAMES[attrs["language"]]


def _accent_phrase(attrs: dict) -> str:
  """'with a German accent' for accented English, '' for a native voice speaking its own language."""
  if attrs["language"] == "en":
    return f"with {_a(attrs['accent'])} accent"
  return ""


def _speech_content(attrs: dict, rng: np.random.Generator) -> str:
  who = _pick(rng, _PERSON[attrs["gender"]])
  accent = _accent_phrase(attrs)
  if accent and rng.uniform() < 0.7:
    who = f"{who} {accent}"
  text = _quote(attrs)
  where = "" if attrs["language"] == "en" else _pick(rng, (f"in {_speech_language(attrs)}", ""))
  how = _pick(rng, _PACE_ADVERBS[_pace(attrs["rate_wpm"])])
  form = int(rng.integers(3))
  if form == 0:
    return _sentence(rng, f"{who} {_pick(rng, _SPEAK_VERBS)} {text} {where} {how}")
  if form == 1:
    return _sentence(rng, f"{how}, {who} {_pick(rng, _SPEAK_VERBS)} {text} {where}")
  return _sentence(rng, f"{text} spoken {how} by {who} {where}")


def _speech_tags(attrs: dict, rng: np.random.Generator) -> str:
  gender = attrs["gender"]
  tags = [_pick(rng, (gender, f"{gender} voice", "man" if gender == "male" else "woman")),
          _pick(rng, (f"{_pitch(attrs['pitch'])} pitch", _pick(rng, _PITCH_WORDS[_pitch(attrs['pitch'])]))),
          _pick(rng, (f"{_pace(attrs['rate_wpm'])} pace", f"{_pace(attrs['rate_wpm'])} speaking rate",
                      f"{_pace(attrs['rate_wpm'])} speech")),
          _pick(rng, (f"{attrs['accent']} accent", f"accent: {attrs['accent']}")),
          _pick(rng, (_speech_language(attrs), f"language: {_speech_language(attrs)}"))]
  if rng.uniform() < 0.5:
    tags.append(_pick(rng, ("synthetic voice", "robotic", "text-to-speech", "computer voice")))
  order = rng.permutation(len(tags))
  return ", ".join(tags[i] for i in order)


def _speech_description(attrs: dict, rng: np.random.Generator) -> str:
  pitch = _pick(rng, _PITCH_WORDS[_pitch(attrs["pitch"])])
  gender = attrs["gender"]
  voice = _pick(rng, (f"{pitch} {gender} voice", f"{gender} speaker with a {pitch} voice"))
  accent = _accent_phrase(attrs) or f"in {_speech_language(attrs)}"
  pace = _pace(attrs["rate_wpm"])
  quality = _pick(rng, ("synthetic", "robotic", "flat, machine-like", "clear but artificial"))
  form = int(rng.integers(3))
  if form == 0:
    return _sentence(rng, f"{_a(voice)} {accent} talks at a {pace} pace; the delivery sounds {quality}")
  if form == 1:
    return _sentence(rng, f"in this recording {_a(voice)} delivers a short sentence {accent}. "
                          f"The speaking rate is {pace} and the tone is {quality}")
  return _sentence(rng, f"{_a(quality)} {pitch} {gender} voice {accent}, speaking {_pick(rng, _PACE_ADVERBS[pace])}")


def _speech_short(attrs: dict, rng: np.random.Generator) -> str:
  person = "man" if attrs["gender"] == "male" else "woman"
  options = [f"{person} speaking {_speech_language(attrs)}", f"{attrs['gender']} speech",
             f"a {person} talking", f"speech in {_speech_language(attrs)}", f"someone says {_quote(attrs)}"]
  return _sentence(rng, _pick(rng, options))


# ----------------------------------------------------------------------------------------------------------
# Music attributes in words.

_CHORD_MOODS = {"major": ("bright", "happy", "cheerful"), "minor": ("sad", "melancholic", "dark"),
                "dominant seventh": ("bluesy", "unresolved", "jazzy"), "major seventh": ("dreamy", "jazzy", "soft"),
                "minor seventh": ("mellow", "smooth", "jazzy"), "diminished": ("tense", "uneasy", "suspenseful"),
                "augmented": ("eerie", "mysterious", "unsettled"),
                "suspended fourth": ("open", "floating", "unresolved"),
                "power": ("heavy", "strong", "rock-like")}
_DYNAMICS = {"soft": ("softly", "gently", "quietly"), "medium": ("at a moderate volume", "evenly", "steadily"),
             "loud": ("loudly", "forcefully", "strongly")}
_FAMILY_WORDS = {"piano": ("keyboard", "piano"), "mallet percussion": ("mallet", "tuned percussion"),
                 "organ": ("organ", "keyboard"), "guitar": ("guitar", "string instrument"),
                 "bass": ("bass", "low end"), "strings": ("strings", "string instrument"),
                 "brass": ("brass", "horn"), "reed": ("woodwind", "reed instrument"), "pipe": ("woodwind", "flute"),
                 "synth": ("synthesizer", "electronic"), "drums": ("drums", "percussion")}


def _tempo(bpm: int) -> str:
  return "slow" if bpm < 90 else "fast" if bpm > 130 else "moderate"


def _dynamics(velocity: int) -> str:
  return "soft" if velocity < 70 else "loud" if velocity > 100 else "medium"


def _register(root: int) -> str:
  return "low" if root < 48 else "high" if root > 72 else "middle"


def _chord_name(attrs: dict) -> str:
  root = ds.PITCH_CLASSES[attrs["root"] % 12]
  quality = attrs["quality"]
  return f"{root} power chord" if quality == "power" else f"{root} {quality} chord"


def _music_what(attrs: dict, rng: np.random.Generator) -> str:
  """What is played, as an object phrase: 'a single C4 note', 'an arpeggiated A minor chord'."""
  pattern = attrs["pattern"]
  if pattern == "drums":
    return _pick(rng, ("a simple rock beat", "a basic drum groove", "a steady backbeat with kick, snare and hi-hat"))
  note = ds.note_name(attrs["root"])
  if pattern == "note":
    return _pick(rng, (f"a single {note} note", f"one sustained {note}", f"a long {note} note",
                       f"the note {ds.PITCH_CLASSES[attrs['root'] % 12]}"))
  if pattern == "chord":
    return _pick(rng, (_a(_chord_name(attrs)), f"a sustained {_chord_name(attrs)}", f"a held {_chord_name(attrs)}"))
  if pattern == "arpeggio":
    return _pick(rng, (f"an arpeggiated {_chord_name(attrs)}", f"the notes of {_a(_chord_name(attrs))} one by one",
                       f"a broken {_chord_name(attrs)}"))
  if pattern == "repeated note":
    return _pick(rng, (f"the note {note} over and over", f"a repeated {note}", f"{note} struck on every beat"))
  key = f"{ds.PITCH_CLASSES[attrs['root'] % 12]} {attrs['quality']}"
  return _pick(rng, (f"an ascending {key} scale", f"a rising {key} scale", f"the {key} scale going up"))


def _has_tempo(attrs: dict) -> bool:
  return attrs["pattern"] not in ("note", "chord")


def _music_content(attrs: dict, rng: np.random.Generator) -> str:
  player = attrs["instrument"] if attrs["pattern"] != "drums" else _pick(rng, ("drum kit", "drummer"))
  verb = "plays" if attrs["pattern"] != "drums" else _pick(rng, ("plays", "keeps"))
  text = f"{_a(player)} {verb} {_music_what(attrs, rng)}"
  extras = []
  if _has_tempo(attrs):
    extras.append(_pick(rng, (f"{_tempo(attrs['tempo_bpm'])} tempo", f"at {attrs['tempo_bpm']} bpm",
                              f"at a {_tempo(attrs['tempo_bpm'])} tempo")))
  if "quality" in attrs and attrs["pattern"] in ("chord", "arpeggio"):
    extras.append(_pick(rng, _CHORD_MOODS[attrs["quality"]]))
  extras.append(_pick(rng, _DYNAMICS[_dynamics(attrs["velocity"])]))
  return _sentence(rng, ", ".join([text] + [extras[i] for i in rng.permutation(len(extras))]))


def _music_tags(attrs: dict, rng: np.random.Generator) -> str:
  tags = [attrs["instrument"], _pick(rng, _FAMILY_WORDS[attrs["family"]]),
          _pick(rng, ("instrumental", "solo", "no vocals"))]
  if attrs["pattern"] != "drums":
    tags.append(_pick(rng, (f"{_register(attrs['root'])} register", f"key of {ds.PITCH_CLASSES[attrs['root'] % 12]}",
                            f"{_register(attrs['root'])} notes")))
  if attrs["pattern"] == "note":
    tags.append(_pick(rng, (ds.note_name(attrs["root"]), "single note", "sustained note")))
  elif attrs["pattern"] in ("chord", "arpeggio"):
    tags += [_chord_name(attrs), _pick(rng, _CHORD_MOODS[attrs["quality"]])]
  elif attrs["pattern"] == "scale":
    tags.append(f"{attrs['quality']} scale")
  if _has_tempo(attrs):
    tags.append(_pick(rng, (f"{attrs['tempo_bpm']} bpm", f"{_tempo(attrs['tempo_bpm'])} tempo")))
  dynamics = _dynamics(attrs["velocity"])
  tags.append(_pick(rng, (dynamics, f"{dynamics} dynamics", f"{dynamics} volume")))
  return ", ".join(tags[i] for i in rng.permutation(len(tags)))


def _music_description(attrs: dict, rng: np.random.Generator) -> str:
  family = attrs["family"]
  opener = _pick(rng, ("This is a short instrumental recording", "This clip is a brief music sample",
                       "A short instrumental excerpt"))
  what = _music_what(attrs, rng)
  if attrs["pattern"] == "drums":
    body = f"of a drum kit playing {what}"
  else:
    body = f"featuring {_a(attrs['instrument'])} from the {family} family, which plays {what}"
  sentences = [f"{opener} {body}."]
  if _has_tempo(attrs):
    sentences.append(f"The tempo is {_tempo(attrs['tempo_bpm'])}, around {attrs['tempo_bpm']} beats per minute.")
  if attrs["pattern"] in ("chord", "arpeggio"):
    sentences.append(f"The mood is {_pick(rng, _CHORD_MOODS[attrs['quality']])}.")
  sentences.append(f"It is played {_pick(rng, _DYNAMICS[_dynamics(attrs['velocity'])])} with no other instruments.")
  return " ".join(sentences)


def _music_short(attrs: dict, rng: np.random.Generator) -> str:
  if attrs["pattern"] == "drums":
    return _sentence(rng, _pick(rng, ("drum beat", "solo drums", f"drums at {attrs['tempo_bpm']} bpm")))
  pc = ds.PITCH_CLASSES[attrs["root"] % 12]
  options = [f"solo {attrs['instrument']}", f"{attrs['instrument']} {attrs['pattern']}",
             f"{attrs['family']} instrument playing in {pc}"]
  if attrs["pattern"] in ("chord", "arpeggio"):
    options.append(f"{_chord_name(attrs)} on {attrs['instrument']}")
  return _sentence(rng, _pick(rng, options))


# ----------------------------------------------------------------------------------------------------------
# Sound attributes in words.

def _hz(hz: float) -> str:
  return f"{hz / 1000:.1f} kHz" if hz >= 1000 else f"{hz:.0f} Hz"


def _sound_phrase(p: dict, rng: np.random.Generator) -> str:
  """A noun phrase naming a sox sound from its parameters: 'an alarm beeping rapidly at 2.1 kHz'."""
  kind = p["sound_type"]
  if kind == "tone":
    wave = {"sine": ("pure sine", "sine-wave", "smooth"), "square": ("square-wave", "buzzy", "harsh square"),
            "sawtooth": ("sawtooth", "buzzy sawtooth", "bright sawtooth"),
            "triangle": ("triangle-wave", "soft triangle", "mellow triangle")}[p["wave"]]
    return _pick(rng, (f"a steady {_pick(rng, wave)} tone at {_hz(p['hz'])}", f"a {_pick(rng, wave)} tone",
                       f"a constant {_hz(p['hz'])} {p['wave']} tone"))
  if kind == "chord":
    name = f"{ds.PITCH_CLASSES[p['root'] % 12]} {p['quality']}"
    return _pick(rng, (f"an electronic {name} chord of {p['wave']} tones", f"a synthetic {name} chord",
                       f"three {p['wave']} tones forming {_a(p['quality'])} chord"))
  if kind == "sweep":
    a, b = (p["lo_hz"], p["hi_hz"]) if p["direction"] == "rising" else (p["hi_hz"], p["lo_hz"])
    return _pick(rng, (f"a {p['direction']} sine sweep from {_hz(a)} to {_hz(b)}", f"a {p['direction']} tone",
                       f"a tone sweeping {'up' if p['direction'] == 'rising' else 'down'} in pitch"))
  if kind == "beeping":
    rate = 1.0 / (p["beep_seconds"] + p["gap_seconds"])
    speed = "rapid" if rate > 3 else "slow" if rate < 1.6 else "regular"
    return _pick(rng, (f"an alarm beeping at {_hz(p['hz'])}", f"{speed} electronic beeps",
                       f"a {speed} series of short {_hz(p['hz'])} beeps", f"a beeping alarm"))
  if kind == "siren":
    speed = "fast" if p["cycle_seconds"] < 0.9 else "slow"
    return _pick(rng, ("a siren wailing", f"a {speed} rising and falling siren", "an emergency siren",
                       f"a siren sweeping between {_hz(p['lo_hz'])} and {_hz(p['hi_hz'])}"))
  if kind == "phone ringing":
    return _pick(rng, ("a telephone ringing", "a phone ring tone", "the double tone of a ringing telephone"))
  if kind == "ticking":
    speed = "fast" if p["period_seconds"] < 0.5 else "slow"
    return _pick(rng, ("a clock ticking", f"{speed} ticking", f"sharp clicks about every {p['period_seconds']:.1f} s"))
  if kind == "noise":
    return _pick(rng, (f"{p['colour']} noise", f"a hiss of {p['colour']} noise", f"steady {p['colour']} noise",
                       {"white": "bright static hiss", "pink": "soft broadband noise",
                        "brown": "deep rumbling noise"}[p["colour"]]))
  if kind == "rain":
    return _pick(rng, ("rain falling", "steady rain", "the patter of rain", "rainfall"))
  if kind == "wind":
    return _pick(rng, ("wind blowing", "gusts of wind", "a howling wind", "wind noise"))
  if kind == "engine":
    return _pick(rng, ("an engine idling", "a low rumbling motor", "the drone of an engine",
                       f"a running engine humming at about {p['hz']:.0f} Hz"))
  if kind == "waves":
    return _pick(rng, ("ocean waves", "waves washing on a shore", "the sea surging slowly", "surf"))
  if kind == "hum":
    return _pick(rng, ("an electrical hum", f"mains hum at {p['hz']:.0f} Hz", "a low buzzing hum"))
  raise ValueError(f"unknown sound type {kind!r}")


def _level_words(peak_dbfs: float) -> tuple[str, ...]:
  return (("faint", "quiet", "distant") if peak_dbfs < -9 else ("loud", "close", "prominent") if peak_dbfs > -4
          else ("clear", "moderately loud", "audible"))


def _sound_content(attrs: dict, rng: np.random.Generator) -> str:
  text = _sound_phrase(attrs, rng)
  background = attrs["background"]
  if background is not None:
    text += f" {_pick(rng, ('over', 'with', 'against'))} {_sound_phrase(background, rng)}"
    text += _pick(rng, (" in the background", ""))
  return _sentence(rng, text)


def _sound_tags(attrs: dict, rng: np.random.Generator) -> str:
  kind = attrs["sound_type"]
  tags = [kind, _pick(rng, _level_words(attrs["peak_dbfs"]))]
  tags.append({"tone": "electronic", "chord": "synthetic", "sweep": "electronic", "beeping": "alarm",
               "siren": "emergency", "phone ringing": "telephone", "ticking": "clock", "noise": "static",
               "rain": "weather", "wind": "weather", "engine": "vehicle", "waves": "water",
               "hum": "electrical"}[kind])
  if "hz" in attrs and not isinstance(attrs["hz"], tuple):
    tags.append(_hz(attrs["hz"]))
  if attrs["background"] is not None:
    tags.append(_pick(rng, (f"{attrs['background']['sound_type']} in background",
                            f"background: {attrs['background']['sound_type']}")))
  tags.append(_pick(rng, ("no speech", "non-speech", "sound effect", "ambience")))
  return ", ".join(tags[i] for i in rng.permutation(len(tags)))


def _sound_scene(attrs: dict, rng: np.random.Generator) -> str:
  level = _pick(rng, _level_words(attrs["peak_dbfs"]))
  main = _sound_phrase(attrs, rng)
  background = attrs["background"]
  scene = _pick(rng, ("The recording contains", "An acoustic scene with", "In this clip one hears",
                      "The audio captures"))
  text = f"{scene} {main}, {level}"
  if background is not None:
    text += f", while {_sound_phrase(background, rng)} continues underneath"
  else:
    text += _pick(rng, (", with nothing else audible", ", alone", ""))
  return _sentence(rng, text)


def _sound_short(attrs: dict, rng: np.random.Generator) -> str:
  return _sentence(rng, _pick(rng, (attrs["sound_type"], _sound_phrase(attrs, rng),
                                    f"{attrs['sound_type']} sound")))


# ----------------------------------------------------------------------------------------------------------
# Mix: speech over a background.

def _snr_words(snr_db: float) -> tuple[str, ...]:
  return (("loud", "heavy", "strong") if snr_db < 7 else ("faint", "soft", "light") if snr_db > 14
          else ("noticeable", "moderate", "steady"))


def _mix_content(attrs: dict, rng: np.random.Generator) -> str:
  speech = _speech_content(attrs, rng).rstrip(".")
  background = _sound_phrase(attrs["background"], rng)
  return _sentence(rng, f"{speech} {_pick(rng, ('over', 'while there is', 'with'))} {background}"
                        f"{_pick(rng, (' in the background', ''))}")


def _mix_tags(attrs: dict, rng: np.random.Generator) -> str:
  snr = _pick(rng, _snr_words(attrs["background"]["snr_db"]))
  background = attrs["background"]["sound_type"]
  return _speech_tags(attrs, rng) + ", " + _pick(
      rng, (f"{snr} background {background}", f"background: {background}", f"noisy, {background}"))


def _mix_scene(attrs: dict, rng: np.random.Generator) -> str:
  person = _pick(rng, _PERSON[attrs["gender"]])
  snr = _pick(rng, _snr_words(attrs["background"]["snr_db"]))
  return _sentence(rng, f"{person} talks {_pick(rng, _PACE_ADVERBS[_pace(attrs['rate_wpm'])])} in "
                        f"{_speech_language(attrs)}, with {snr} background noise from "
                        f"{_sound_phrase(attrs['background'], rng)}")


def _mix_description(attrs: dict, rng: np.random.Generator) -> str:
  return _speech_description(attrs, rng).rstrip(".") + ", " + _pick(
      rng, ("with background noise", f"with {_sound_phrase(attrs['background'], rng)} behind the voice",
            "in a noisy setting"))


STYLES: dict[str, tuple[Callable[[dict, np.random.Generator], str], ...]] = {
    "speech": (_speech_content, _speech_tags, _speech_description, _speech_short),
    "music": (_music_content, _music_tags, _music_description, _music_short),
    "sound": (_sound_content, _sound_tags, _sound_scene, _sound_short),
    "mix": (_mix_content, _mix_tags, _mix_scene, _mix_description, _speech_short),
}


def clip_captions(attrs: dict, rng: np.random.Generator) -> list[str]:
  """3 to 5 distinct captions in different styles (each style at most twice) for one clip's attributes."""
  styles = STYLES[attrs["domain"]]
  wanted = int(rng.integers(3, 6))
  order = [styles[i] for i in rng.permutation(len(styles))]
  order += [styles[i] for i in rng.permutation(len(styles))]  # a second pass reuses styles with other wording
  captions: list[str] = []
  for style in order:
    if len(captions) == wanted:
      break
    caption = style(attrs, rng)
    if caption not in captions:
      captions.append(caption)
  return captions
