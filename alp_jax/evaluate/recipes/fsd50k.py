"""FSD50K (Fonseca et al. 2022, zenodo 4060432): multi-label sound events, 200 classes, scored by mAP.

  SOURCE/FSD50K.ground_truth/dev.csv         fname,labels,mids,split   (split: train | val)
  SOURCE/FSD50K.ground_truth/eval.csv        fname,labels,mids
  SOURCE/FSD50K.ground_truth/vocabulary.csv  index,label,mid (no header)
  SOURCE/FSD50K.dev_audio/FNAME.wav, SOURCE/FSD50K.eval_audio/FNAME.wav

Splits as released, and as HEAR uses them: dev split=train -> train, split=val -> valid, eval -> test. As HEAR,
the 12 dev clips that are 30 s or longer (wrong Freesound metadata; Fonseca, p.c. in HEAR's source) are left out.
`labels` is the quoted, comma-separated list of leaf and ancestor class names (e.g. "Electric_guitar,Guitar,
Plucked_string_instrument,Musical_instrument,Music"); every one must be in vocabulary.csv.

Checked against hearbenchmark/hear-preprocess hearpreprocess/secrettasks/hearsecrettasks/fsd50k.py (reads dev.csv
and eval.csv with their header, splits `labels` on ",", maps val -> valid, drops the 12 long clips) and the FSD50K
README's layout (zenodo 4060432: vocabulary.csv has no header).
"""
from __future__ import annotations

from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = ("FSD50K.ground_truth/{dev,eval,vocabulary}.csv, FSD50K.dev_audio/*.wav, FSD50K.eval_audio/*.wav")
# dev clips HEAR leaves out: 30 s or longer despite FSD50K's limit (hear-preprocess fsd50k.py, "too_long_files")
HEAR_TOO_LONG = frozenset({"83299", "83298", "121426", "121351", "121472", "121471", "124796", "397150", "124797",
                           "124800", "124834", "124858"})


def convert(source: Path) -> common.Converted:
  truth = source / "FSD50K.ground_truth"
  vocabulary = {row["label"] for row in common.read_csv(truth / "vocabulary.csv", ("index", "label", "mid"),
                                                         header=False)}
  splits = {"train": [], "valid": [], "test": []}
  too_long = 0
  for name, audio_dir in (("dev.csv", "FSD50K.dev_audio"), ("eval.csv", "FSD50K.eval_audio")):
    path = truth / name
    columns = ("fname", "labels", "mids", "split") if name == "dev.csv" else ("fname", "labels", "mids")
    for row in common.read_csv(path, columns):
      where = f"{path}:{row['_line']}"
      if name == "dev.csv" and row["fname"] in HEAR_TOO_LONG:
        too_long += 1
        continue
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
  notes = [f"left out {too_long} dev clips of 30 s or more, as HEAR does"] if too_long else []
  return common.Converted([common.Folder("", splits, task_json={"metric": "map"})], notes)
