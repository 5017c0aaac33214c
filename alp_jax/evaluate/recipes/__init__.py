"""Recipes: a dataset's official download -> our task folders, for the paper's evaluation tasks.

  python -m alp_jax.evaluate.recipes --list
  python -m alp_jax.evaluate.recipes fsd50k --source /data/FSD50K --out tasks/fsd50k [--link | --copy]

`RECIPES[name]` holds each recipe's converter, expected source layout, splits and metric; `run(name, source, out)`
converts and writes (common.write). One module per dataset or family; adding a dataset is one module and one
entry here. configs/eval_suites/study.py lists which recipes the paper's evaluation uses.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from alp_jax.evaluate.recipes import (audioset_strong, captions, common, crema_d, fsd50k, magnatagatune, nsynth,
                                      vggsound, voxceleb)
from alp_jax.evaluate.recipes.common import RecipeError

__all__ = ["RECIPES", "Recipe", "RecipeError", "run"]


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  convert: Callable[[Path], common.Converted]
  kind: str            # "probe" | "caption" | "sed": the task folder it writes
  layout: str          # the files expected under --source
  splits: str          # how the dataset's official splits map onto ours
  metric: str
  max_missing: float = 0.02   # default share of a split's audio that may be absent before refusing


RECIPES = {r.name: r for r in (
    Recipe("fsd50k", fsd50k.convert, "probe", fsd50k.LAYOUT, "dev train/val -> train/valid, eval -> test", "mAP"),
    Recipe("vggsound", vggsound.convert, "probe", vggsound.LAYOUT, "train, test (valid carved from train)",
           "accuracy", vggsound.DEFAULT_MAX_MISSING),
    Recipe("voxceleb1", voxceleb.convert_vox1, "probe", voxceleb.LAYOUT_1, "iden_split.txt 1/2/3 -> train/valid/test",
           "accuracy"),
    Recipe("voxceleb2", voxceleb.convert_vox2, "probe", voxceleb.LAYOUT_2,
           "per speaker: last video test, one before valid, rest train (ours)", "accuracy"),
    Recipe("crema_d", crema_d.convert, "probe", crema_d.LAYOUT, "5 speaker-disjoint folds: fold1..fold5 subfolders",
           "accuracy (mean over folds)"),
    Recipe("magnatagatune", magnatagatune.convert, "probe", magnatagatune.LAYOUT,
           "folders 0-b train, c valid, d-f test; top-50 tags", "mAP"),
    Recipe("nsynth_instrument", nsynth.convert_instrument, "probe", nsynth.LAYOUT,
           "train, valid, test as released; 11 instrument families", "accuracy"),
    Recipe("nsynth_pitch", nsynth.convert_pitch, "probe", nsynth.LAYOUT,
           "train, valid, test as released; MIDI pitch 21-108", "accuracy"),
    Recipe("audioset_strong", audioset_strong.convert, "sed", audioset_strong.LAYOUT, "train -> train, eval -> test",
           "PSDS1", audioset_strong.DEFAULT_MAX_MISSING),
    Recipe("audiocaps", captions.audiocaps, "caption", captions.AUDIOCAPS_LAYOUT, "train, val -> valid, test",
           "R@k, ROUGE-L", captions.YOUTUBE_MAX_MISSING),
    Recipe("clotho", captions.clotho, "caption", captions.CLOTHO_LAYOUT,
           "development -> train, validation -> valid, evaluation -> test", "R@k, ROUGE-L"),
    Recipe("musiccaps", captions.musiccaps, "caption", captions.MUSICCAPS_LAYOUT,
           "is_audioset_eval False -> train, True -> test", "R@k, ROUGE-L", captions.YOUTUBE_MAX_MISSING),
    Recipe("paraspeechcaps", captions.paraspeechcaps, "caption", captions.PSC_LAYOUT,
           "train_base -> train, dev -> valid, holdout -> test", "R@k, ROUGE-L"),
)}


def run(name: str, source: str | Path, out: str | Path, audio_mode: str = "absolute",
        max_missing: float | None = None) -> list[str]:
  """Converts dataset `name` from `source` into the task folder `out`; returns the summary lines."""
  if name not in RECIPES:
    raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
  recipe = RECIPES[name]
  source, out = Path(source).absolute(), Path(out).absolute()
  if not source.is_dir():
    raise RecipeError(f"--source {source} is not a folder; expected {recipe.layout}")
  common.prepare_out(out)   # refuse a foreign --out before reading anything large
  converted = recipe.convert(source)
  return common.write(converted, name, source, out, audio_mode,
                      recipe.max_missing if max_missing is None else max_missing)
