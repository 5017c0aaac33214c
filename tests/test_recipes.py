"""Dataset recipes: each converter on a tiny fixture in the dataset's real metadata format (a few rows, 10-ms wav
files), checked through the task readers; missing files and foreign output folders refused."""
import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from alp_jax.configs.eval_suites import study
from alp_jax.evaluate import caption_tasks, recipes, tasks
from alp_jax.evaluate.recipes import __main__ as cli


def wav(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, np.zeros(160, np.float32), 16000, format="WAV")   # WAV bytes whatever the suffix
  return path


def write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def labels_by_name(task, split):
  return {e.path.name: e.labels for e in task.splits[split]}


def fsd50k_source(root):
  truth = root / "FSD50K.ground_truth"
  write(truth / "vocabulary.csv", "0,Bark,/m/05tny_\n1,Dog,/m/0bt9lr\n2,Guitar,/m/0342h\n")
  write(truth / "dev.csv", 'fname,labels,mids,split\n64760,"Bark,Dog","/m/05tny_,/m/0bt9lr",train\n'
                           '16399,Guitar,/m/0342h,train\n21,Dog,/m/0bt9lr,val\n')
  write(truth / "eval.csv", 'fname,labels,mids\n37199,"Guitar,Dog","/m/0342h,/m/0bt9lr"\n')
  for name in ("64760", "16399", "21"):
    wav(root / "FSD50K.dev_audio" / f"{name}.wav")
  wav(root / "FSD50K.eval_audio" / "37199.wav")


def test_fsd50k_splits_and_multi_labels(tmp_path):
  fsd50k_source(tmp_path / "src")
  recipes.run("fsd50k", tmp_path / "src", tmp_path / "out")
  task = tasks.read_task(tmp_path / "out")
  assert task.metric == tasks.MULTI_LABEL and task.classes == ["Bark", "Dog", "Guitar"]
  assert labels_by_name(task, "train") == {"64760.wav": ("Bark", "Dog"), "16399.wav": ("Guitar",)}
  assert labels_by_name(task, "valid") == {"21.wav": ("Dog",)}
  assert labels_by_name(task, "test") == {"37199.wav": ("Dog", "Guitar")}
  assert task.splits["test"][0].path == (tmp_path / "src/FSD50K.eval_audio/37199.wav").absolute()


def test_missing_audio_is_refused_naming_files_or_dropped_under_the_threshold(tmp_path):
  fsd50k_source(tmp_path / "src")
  os.remove(tmp_path / "src/FSD50K.dev_audio/16399.wav")
  with pytest.raises(recipes.RecipeError, match=r"train: 1 of 2 audio files are missing.*16399\.wav"):
    recipes.run("fsd50k", tmp_path / "src", tmp_path / "out")
  assert not (tmp_path / "out").exists()
  lines = recipes.run("fsd50k", tmp_path / "src", tmp_path / "out", max_missing=0.5)
  assert any("dropped 1 of 2" in line for line in lines)
  assert labels_by_name(tasks.read_task(tmp_path / "out"), "train") == {"64760.wav": ("Bark", "Dog")}


def test_fsd50k_label_outside_vocabulary_names_the_line(tmp_path):
  fsd50k_source(tmp_path / "src")
  write(tmp_path / "src/FSD50K.ground_truth/eval.csv", "fname,labels,mids\n37199,Cat,/m/01yrx\n")
  with pytest.raises(recipes.RecipeError, match=r"eval\.csv:2: labels \['Cat'\] not in vocabulary"):
    recipes.run("fsd50k", tmp_path / "src", tmp_path / "out")


def test_missing_metadata_file_is_named(tmp_path):
  (tmp_path / "src").mkdir()
  with pytest.raises(recipes.RecipeError, match=r"vggsound\.csv is missing"):
    recipes.run("vggsound", tmp_path / "src", tmp_path / "out")


def test_vggsound_finds_clips_by_youtube_id_and_start(tmp_path):
  src = tmp_path / "src"
  write(src / "vggsound.csv", '---g-f_I2yQ,1,"people marching",test\n--0PQM4-hqg,30,waterfall burbling,train\n'
                              '--56QUhyDQM,185,"playing tennis",train\n')
  wav(src / "video/---g-f_I2yQ_000001.wav")
  wav(src / "video/--0PQM4-hqg_000030.wav")
  wav(src / "more/--56QUhyDQM_185.wav")
  recipes.run("vggsound", src, tmp_path / "out")
  task = tasks.read_task(tmp_path / "out")
  assert set(task.splits) == {"train", "test"} and task.metric == tasks.SINGLE_LABEL
  assert labels_by_name(task, "train") == {"--0PQM4-hqg_000030.wav": ("waterfall burbling",),
                                           "--56QUhyDQM_185.wav": ("playing tennis",)}
  assert labels_by_name(task, "test") == {"---g-f_I2yQ_000001.wav": ("people marching",)}


def test_voxceleb1_official_identification_split(tmp_path):
  src = tmp_path / "src"
  write(src / "vox1_meta.csv", "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                               "id10001\tA.J._Buckley\tm\tIreland\tdev\nid10002\tAJ_Cook\tf\tCanada\tdev\n")
  split = {"id10001/1zcIwhmdeo4/00001.wav": 1, "id10001/1zcIwhmdeo4/00002.wav": 2, "id10001/7w0IBEWc9Qw/00001.wav": 3,
           "id10002/0_laIeN-Q44/00001.wav": 1, "id10002/6WO410QOeuo/00001.wav": 3}
  write(src / "iden_split.txt", "".join(f"{s} {p}\n" for p, s in split.items()))
  for path in split:
    wav(src / "wav" / path)
  recipes.run("voxceleb1", src, tmp_path / "out")
  task = tasks.read_task(tmp_path / "out")
  got = {str(e.path.relative_to((src / "wav").absolute())): (s, e.labels[0])
         for s, examples in task.splits.items() for e in examples}
  names = {1: "train", 2: "valid", 3: "test"}
  assert got == {p: (names[s], p.split("/")[0]) for p, s in split.items()}


def test_voxceleb2_holds_out_each_speakers_last_videos(tmp_path):
  src = tmp_path / "src"
  write(src / "vox2_meta.csv", "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid00012 ,n000012 ,m ,dev \n"
                               "id00015 ,n000015 ,m ,dev \n")
  for video in ("21Uxsk56VDQ", "2DLq_Kkc1r8", "5M8nmmeqT5A"):
    for utt in ("00001.m4a", "00002.m4a"):
      wav(src / "dev/aac/id00012" / video / utt)
  for video in ("0fijmz4vTVU", "1Xj6QGY4x2I"):
    wav(src / "dev/aac/id00015" / video / "00001.m4a")
  lines = recipes.run("voxceleb2", src, tmp_path / "out")
  assert any("left out 1 speakers" in line for line in lines)
  task = tasks.read_task(tmp_path / "out")
  videos = {s: sorted({e.path.parent.name for e in examples}) for s, examples in task.splits.items()}
  assert videos == {"train": ["21Uxsk56VDQ"], "valid": ["2DLq_Kkc1r8"], "test": ["5M8nmmeqT5A"]}
  assert task.classes == ["id00012"] and len(task.splits["train"]) == 2


def test_crema_d_five_speaker_disjoint_folds(tmp_path):
  src = tmp_path / "src"
  emotions = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
  actors = [str(1001 + i) for i in range(7)]
  for i, actor in enumerate(actors):
    wav(src / "AudioWAV" / f"{actor}_DFA_{emotions[i % 6]}_XX.wav")
    wav(src / "AudioWAV" / f"{actor}_IEO_{emotions[(i + 1) % 6]}_HI.wav")
  recipes.run("crema_d", src, tmp_path / "out")
  folds = [tasks.read_task(tmp_path / "out" / f"fold{k}") for k in range(1, 6)]
  actor = lambda e: e.path.name.split("_")[0]
  tested = [actor(e) for fold in folds for e in fold.splits["test"]]
  assert sorted(tested) == sorted(actors * 2)                 # every clip is tested exactly once
  for k, fold in enumerate(folds):
    speakers = {s: {actor(e) for e in fold.splits[s]} for s in fold.splits}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["valid"] & speakers["test"])
    assert speakers["valid"] == {actor(e) for e in folds[(k + 1) % 5].splits["test"]}
    assert sum(len(v) for v in fold.splits.values()) == 14
  first = folds[0].splits["test"]
  assert {e.path.name: e.labels for e in first} == {"1001_DFA_ANG_XX.wav": ("anger",),
                                                    "1001_IEO_DIS_HI.wav": ("disgust",),
                                                    "1006_DFA_SAD_XX.wav": ("sad",),
                                                    "1006_IEO_ANG_HI.wav": ("anger",)}


def test_crema_d_refuses_foreign_file_names(tmp_path):
  wav(tmp_path / "src/AudioWAV/1001_DFA_XYZ_XX.wav")
  with pytest.raises(recipes.RecipeError, match="1001_DFA_XYZ_XX.wav: not a CREMA-D name"):
    recipes.run("crema_d", tmp_path / "src", tmp_path / "out")


def test_magnatagatune_top_50_tags_and_folder_split(tmp_path):
  src = tmp_path / "src"
  tags = [f"tag{i:02d}" for i in range(52)]
  clips = {"0/a-1-0-29.mp3": ["tag00", "tag01"], "b/b-2-0-29.mp3": ["tag00", "tag50"],
           "c/c-3-0-29.mp3": ["tag02"], "d/d-4-0-29.mp3": ["tag51"], "f/f-5-0-29.mp3": ["tag00", "tag03"]}
  # every tag but tag50 / tag51 gets two extra clips (unused audio rows), so those two fall outside the top 50
  rows = [["clip_id", *tags, "mp3_path"]]
  for i, (mp3, on) in enumerate(clips.items()):
    rows.append([str(i), *("1" if t in on else "0" for t in tags), mp3])
  for extra in range(2):
    rows.append([str(10 + extra), *("0" if t in ("tag50", "tag51") else "1" for t in tags), ""])
  with open(write(src / "annotations_final.csv", ""), "w", newline="") as f:
    csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL).writerows(rows)
  for mp3 in clips:
    wav(src / mp3)
  lines = recipes.run("magnatagatune", src, tmp_path / "out")
  assert any("left out 1 clips" in line for line in lines)   # d-4 carries only tag51
  task = tasks.read_task(tmp_path / "out")
  assert task.metric == tasks.MULTI_LABEL
  assert {s: labels_by_name(task, s) for s in task.splits} == {
      "train": {"a-1-0-29.mp3": ("tag00", "tag01"), "b-2-0-29.mp3": ("tag00",)},
      "valid": {"c-3-0-29.mp3": ("tag02",)}, "test": {"f-5-0-29.mp3": ("tag00", "tag03")}}


def nsynth_source(src):
  notes = {"train": {"bass_synthetic_033-022-050": ("bass", 22), "organ_electronic_007-109-127": ("organ", 109)},
           "valid": {"keyboard_acoustic_004-060-025": ("keyboard", 60)},
           "test": {"guitar_acoustic_010-021-100": ("guitar", 21)}}
  for split, records in notes.items():
    write(src / f"nsynth-{split}/examples.json", json.dumps(
        {n: {"note_str": n, "instrument_family_str": fam, "pitch": p, "velocity": 100} for n, (fam, p) in
         records.items()}))
    for note in records:
      wav(src / f"nsynth-{split}/audio/{note}.wav")


def test_nsynth_instrument_and_pitch(tmp_path):
  nsynth_source(tmp_path / "src")
  recipes.run("nsynth_instrument", tmp_path / "src", tmp_path / "inst")
  task = tasks.read_task(tmp_path / "inst")
  assert labels_by_name(task, "train") == {"bass_synthetic_033-022-050.wav": ("bass",),
                                           "organ_electronic_007-109-127.wav": ("organ",)}
  assert task.classes == ["bass", "guitar", "keyboard", "organ"]
  lines = recipes.run("nsynth_pitch", tmp_path / "src", tmp_path / "pitch")
  assert any("left out 1 notes" in line for line in lines)    # pitch 109 is above the piano range
  pitch = tasks.read_task(tmp_path / "pitch")
  assert [(s, e.labels) for s in pitch.splits for e in pitch.splits[s]] == [
      ("train", ("22",)), ("valid", ("60",)), ("test", ("21",))]


def test_audioset_strong_writes_the_strong_label_tsv(tmp_path):
  src = tmp_path / "src"
  write(src / "mid_to_display_name.tsv", "/m/09x0r\tSpeech\n/m/0bt9lr\tDog\n")
  write(src / "audioset_train_strong.tsv", "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        "b0RFKhbpFJA_30000\t0.000\t4.250\t/m/09x0r\nb0RFKhbpFJA_30000\t1.5\t2.0\t/m/0bt9lr\n")
  write(src / "audioset_eval_strong.tsv", "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        "--4gqARaEJE_0\t6.1\t9.9\t/m/0bt9lr\n")
  train_clip = wav(src / "audio/Yb0RFKhbpFJA_30000.wav")
  test_clip = wav(src / "eval/--4gqARaEJE_0.flac")
  recipes.run("audioset_strong", src, tmp_path / "out")
  read = lambda s: list(csv.reader((tmp_path / f"out/{s}.tsv").read_text().splitlines(), delimiter="\t"))
  assert read("train") == [["filename", "onset", "offset", "event_label"],
                           [str(train_clip.absolute()), "0.000", "4.250", "Speech"],
                           [str(train_clip.absolute()), "1.500", "2.000", "Dog"]]
  assert read("test")[1:] == [[str(test_clip.absolute()), "6.100", "9.900", "Dog"]]


def test_audiocaps_groups_captions_per_clip(tmp_path):
  src = tmp_path / "src"
  write(src / "train.csv", "audiocap_id,youtube_id,start_time,caption\n91139,r1nicOVtvkQ,130,A woman talks\n")
  write(src / "val.csv", "audiocap_id,youtube_id,start_time,caption\n97151,vfY_TJq7n_U,130,Rustling occurs\n")
  write(src / "test.csv", "audiocap_id,youtube_id,start_time,caption\n" + "".join(
      f"{103549 + i},7fmOlUlwoNg,20,caption {i}\n" for i in range(5)) + "107869,6BJ455B1aAs,0,A goat bleats\n")
  wav(src / "train/r1nicOVtvkQ.wav")
  wav(src / "val/vfY_TJq7n_U_130.wav")
  wav(src / "test/7fmOlUlwoNg.wav")
  wav(src / "test/Y6BJ455B1aAs.wav")
  recipes.run("audiocaps", src, tmp_path / "out")
  task = caption_tasks.read_caption_task(tmp_path / "out")
  assert {e.id: e.captions for e in task.splits["test"]} == {
      "7fmOlUlwoNg_20": tuple(f"caption {i}" for i in range(5)), "6BJ455B1aAs_0": ("A goat bleats",)}
  assert [e.path.name for e in task.splits["valid"]] == ["vfY_TJq7n_U_130.wav"]


def test_clotho_five_captions(tmp_path):
  src = tmp_path / "src"
  header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
  for name in ("development", "validation", "evaluation"):
    write(src / f"clotho_captions_{name}.csv", header + f'"{name} clip.wav",' + ",".join(
        f'"{name} caption {i}."' for i in range(1, 6)) + "\n")
    wav(src / name / f"{name} clip.wav")
  recipes.run("clotho", src, tmp_path / "out")
  task = caption_tasks.read_caption_task(tmp_path / "out")
  assert task.splits["valid"][0].captions == tuple(f"validation caption {i}." for i in range(1, 6))
  assert task.splits["test"][0].path == (src / "evaluation/evaluation clip.wav").absolute()


def test_musiccaps_split_by_is_audioset_eval(tmp_path):
  src = tmp_path / "src"
  write(src / "musiccaps-public.csv",
        "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,"
        "is_audioset_eval\n"
        "-0Gj8-vB1q4,30,40,\"['/m/0140xf']\",\"['low quality']\",\"The low quality recording, a piano.\",4,False,True\n"
        "-0SdAVK79lg,30,40,\"['/m/0155w']\",\"['guitar']\",\"This song features an electric guitar.\",0,False,False\n")
  wav(src / "music/-0Gj8-vB1q4.wav")
  wav(src / "music/-0SdAVK79lg_30.wav")
  recipes.run("musiccaps", src, tmp_path / "out")
  task = caption_tasks.read_caption_task(tmp_path / "out")
  assert [(e.id, e.captions) for e in task.splits["test"]] == [("-0Gj8-vB1q4", ("The low quality recording, a piano.",))]
  assert [e.id for e in task.splits["train"]] == ["-0SdAVK79lg"]


def test_paraspeechcaps_parquet_and_jsonl(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  src = tmp_path / "src"
  (src / "data").mkdir(parents=True)
  for split in ("train_base", "dev", "holdout"):
    rel = f"voxceleb/{split}/00001.wav"
    table = pa.table({"source": ["voxceleb"], "relative_audio_path": [rel],
                      "text_description": [[f"A {split} man speaks slowly.", f"Slow {split} speech."]]})
    pq.write_table(table, src / "data" / f"{split}-00000-of-00001.parquet")
    wav(src / "audio" / rel)
  recipes.run("paraspeechcaps", src, tmp_path / "out")
  task = caption_tasks.read_caption_task(tmp_path / "out")
  assert task.splits["test"][0].captions == ("A holdout man speaks slowly.", "Slow holdout speech.")
  assert task.splits["train"][0].id == "voxceleb/train_base/00001.wav"
  os.remove(src / "data/dev-00000-of-00001.parquet")
  write(src / "dev.jsonl", json.dumps({"relative_audio_path": "voxceleb/dev/00001.wav",
                                       "text_description": ["From jsonl."]}) + "\n")
  recipes.run("paraspeechcaps", src, tmp_path / "out")
  assert caption_tasks.read_caption_task(tmp_path / "out").splits["valid"][0].captions == ("From jsonl.",)


def test_foreign_out_is_refused_and_kept_link_mode_rewrites_our_own(tmp_path):
  fsd50k_source(tmp_path / "src")
  foreign = write(tmp_path / "foreign/notes.txt", "mine")
  with pytest.raises(recipes.RecipeError, match="not empty and was not written by a recipe"):
    recipes.run("fsd50k", tmp_path / "src", tmp_path / "foreign")
  assert sorted(os.listdir(tmp_path / "foreign")) == ["notes.txt"] and foreign.read_text() == "mine"
  recipes.run("fsd50k", tmp_path / "src", tmp_path / "out")
  mine = write(tmp_path / "out/extra.txt", "kept")
  recipes.run("fsd50k", tmp_path / "src", tmp_path / "out", audio_mode="link")
  task = tasks.read_task(tmp_path / "out")
  link = tmp_path / "out/audio/FSD50K.eval_audio/37199.wav"
  assert task.splits["test"][0].path == link and link.is_symlink() and mine.read_text() == "kept"
  assert next(csv.reader(open(tmp_path / "out/test.csv")))  == ["path", "label"]
  assert open(tmp_path / "out/test.csv").read().splitlines()[1].startswith("audio/FSD50K.eval_audio/37199.wav,")


def test_cli_list_and_error_exit(tmp_path, capsys):
  assert cli.main(["--list"]) == 0
  listed = capsys.readouterr().out
  assert all(f"{name}  (" in listed for name in recipes.RECIPES)
  assert cli.main(["nsynth_instrument", "--source", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
  assert "nsynth-train/examples.json is missing" in capsys.readouterr().err


def test_study_suite_names_a_recipe_of_the_right_kind_for_every_task():
  c = study.get_config("/mnt/tasks")
  assert len(c.tasks) == 10
  for name, task in c.tasks.items():
    assert recipes.RECIPES[task.recipe].kind == task.kind, name
  assert c.tasks.crema_d.task_dirs == tuple(f"/mnt/tasks/crema_d/fold{k}" for k in range(1, 6))
  assert len(c.task_dirs) == 14 and study.get_config().task_dirs == ()
