"""FSD50K (Fonseca et al. 2022, zenodo 4060432): multi-label sound events, 200 classes, scored by mAP.

  SOURCE/FSD50K.ground_truth/dev.csv         fname,labels,mids,split   (split: train | val)
  SOURCE/FSD50K.ground_truth/eval.csv        fname,labels,mids
  SOURCE/FSD50K.ground_truth/vocabulary.csv  index,label,mid (no header)
  SOURCE/FSD50K.dev_audio/FNAME.wav, SOURCE/FSD50K.eval_audio/FNAME.wav

Splits as released (and as HEAR uses them): dev split=train -> train, split=val -> valid, eval -> test.
`labels` is the comma-separated list of leaf and ancestor class names; every one must be in vocabulary.csv.
"""
from __future__ import annotations

from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = ("FSD50K.ground_truth/{dev,eval,vocabulary}.csv, FSD50K.dev_audio/*.wav, FSD50K.eval_audio/*.wav")


def convert(source: Path) -> common.Converted:
  truth = source / "FSD50K.ground_truth"
  vocabulary = {row["label"] for row in common.read_csv(truth / "vocabulary.csv", ("index", "label", "mid"),
                                                         header=False)}
  splits = {"train": [], "valid": [], "test": []}
  for name, audio_dir in (("dev.csv", "FSD50K.dev_audio"), ("eval.csv", "FSD50K.eval_audio")):
    path = truth / name
    columns = ("fname", "labels", "mids", "split") if name == "dev.csv" else ("fname", "labels", "mids")
    for row in common.read_csv(path, columns):
      where = f"{path}:{row['_line']}"
      labels = tuple(sorted({label.strip() for label in row["labels"].split(",") if label.strip()}))
      unknown = [label for label in labels if label not in vocabulary]
      if not labels or unknown:
        raise common.RecipeError(f"{where}: labels {unknown or row['labels']!r} not in vocabulary.csv")
      if name == "dev.csv":
        if row["split"] not in ("train", "val"):
          raise common.RecipeError(f"{where}: split must be train or val, got {row['split']!r}")
        split = "train" if row["split"] == "train" else "valid"
      else:
        split = "test"
      labels = tuple(common.check_label(label, where) for label in labels)
      splits[split].append(common.ProbeRow(source / audio_dir / f"{row['fname']}.wav", labels))
  return common.Converted([common.Folder("", splits, task_json={"metric": "map"})])
