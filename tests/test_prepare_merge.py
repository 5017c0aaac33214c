"""prepare merges exact-duplicate audio of several sources into one clip with every source's captions."""
import json

import numpy as np
import pytest
import soundfile as sf
from array_record.python.array_record_module import ArrayRecordReader

from alp_jax.data import durations
from alp_jax.data import leakage
from alp_jax.data import pipeline
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import records

from corpus_fixtures import sine, write_manifest


def _wav(root, name, freq, seconds, rate=22050):
  path = root / "audio" / f"{name}.wav"
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, sine(freq, seconds, rate) + 0.01 * np.random.default_rng(int(freq)).standard_normal(
      int(round(seconds * rate))).astype(np.float32), rate)
  return str(path.relative_to(root))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """Three sources; `x` is in all three, `long` in a and b; b repeats x under another id (within-source)."""
  root = tmp_path_factory.mktemp("merge")
  x, y, z, long = (_wav(root, n, f, s) for n, f, s in (("x", 440, 1.5), ("y", 660, 1.2), ("z", 880, 1.1),
                                                       ("long", 300, 5.0)))

  def rec(rid, audio, source, captions, **kw):
    return {"id": rid, "audio": audio, "source": source, "captions": captions, **kw}
  a = [rec("a-x", x, "a", ["a dog barks", "barking outside"]), rec("a-y", y, "a", ["rain"]),
       rec("a-long", long, "a", ["a long drone"])]
  b = [rec("b-x", x, "b", ["a dog barks loudly", "a dog barks"], labels={"genre": "bark"}),
       rec("b-z", z, "b", ["wind"]), rec("b-x-again", x, "b", ["the same dog again"]),
       rec("b-long", long, "b", ["a low hum for seconds"])]
  c = [rec("c-x", x, "c", ["speech-style tags: none; a canine vocalises"])]
  manifests = [write_manifest(root / f"{name}.jsonl", recs) for name, recs in (("a", a), ("b", b), ("c", c))]
  return root, manifests


def _records(out, corpus):
  """{clip id: header} of every record in the prepared corpus, and the list of (source, index, header)."""
  headers, order = {}, []
  for name, source in corpus["sources"].items():
    i = 0
    for shard in source["shards"]:
      reader = ArrayRecordReader(str(out / shard))
      for data in reader.read_all():
        header = records.decode_header(data)
        headers[header["id"]] = header
        order.append((name, i, header))
        i += 1
      reader.close()
  return headers, order


def test_shared_clip_gets_every_source_caption(shared, tmp_path):
  root, manifests = shared
  out = tmp_path / "out"
  corpus = prepare_lib.prepare(manifests, out, quiet=True)
  headers, _ = _records(out, corpus)
  assert sorted(headers) == ["a-long", "a-x", "a-y", "b-z"]   # one clip per distinct audio, in its first source
  x = headers["a-x"]
  assert x["source"] == "a" and x["sources"] == ["a", "b", "c"] and x["merged_ids"] == ["b-x", "c-x"]
  # a's captions, then b's that are new ("a dog barks" is already there), then c's; b's repeat is skipped.
  assert x["captions"] == ["a dog barks", "barking outside", "a dog barks loudly",
                           "speech-style tags: none; a canine vocalises"]
  assert x["labels"] == {"genre": "bark"}   # a task the clip lacked, taken from the merged record
  assert headers["a-long"]["captions"] == ["a long drone", "a low hum for seconds"]
  assert headers["a-y"]["sources"] == ["a"] and "merged_ids" not in headers["a-y"]

  # corpus.json: per source pair, the clips merged and the captions they added or already had.
  assert corpus["duplicates"] == {
      "within_source": 1, "across_sources": 3, "captions_added": 3,
      "merged": {"a": {"b": {"clips": 2, "captions_added": 2, "captions_already_present": 1},
                       "c": {"clips": 1, "captions_added": 1, "captions_already_present": 0}}}}
  assert corpus["skipped"] == {"duplicate_audio": 1}
  assert corpus["sources"]["a"] == {**corpus["sources"]["a"], "clips": 3, "captions": 4 + 1 + 2,
                                    "captions_from_other_sources": 3}
  assert corpus["sources"]["b"]["clips"] == 1 and corpus["sources"]["b"]["captions"] == 1
  assert "c" not in corpus["sources"]   # every clip of c was merged into a's: c has no clips of its own
  assert corpus["captions"] == sum(len(h["captions"]) for h in headers.values()) == 8
  merged = [json.loads(line) for line in (out / "merged_records.jsonl").read_text().splitlines()]
  assert [(m["id"], m["into_source"], m["into"].endswith("a.jsonl:1")) for m in merged] == [
      ("b-x", "a", True), ("b-long", "a", False), ("c-x", "a", True)]
  assert json.loads((out / "labels.json").read_text()) == {"genre": {"bark": 1}}

  # Every caption once in captions.txt (tokenizer, leakage), and in the caption-length report.
  texts = (out / "captions.txt").read_text().splitlines()
  assert sorted(texts) == sorted(c for h in headers.values() for c in h["captions"])
  assert corpus["caption_lengths"]["captions"] == len(texts)
  assert corpus["caption_lengths"]["sources"]["c"]["captions"] == 1   # lengths by the caption's own source
  overlap = leakage.caption_overlap(["Speech-style tags: none; a canine vocalises."], out / "captions.txt")
  assert overlap["exact_match_fraction"] == 1.0   # the leakage check sees a merged-in caption
  audio = leakage.read_corpus_audio(out, quiet=True)   # and reports a merged clip under all its sources
  assert dict(zip(audio.ids, audio.sources))["a-x"] == "a+b+c" and len(audio.ids) == 4

  # The index the pipeline reads counts the merged captions: every_caption visits each of them.
  for info in pipeline.load_sources(out):
    _, order = _records(out, {"sources": {info.name: corpus["sources"][info.name]}})
    np.testing.assert_array_equal(info.num_captions, [len(h["captions"]) for _, _, h in order])
    visits = pipeline.ClipSource(info, 0, np.arange(len(info.num_captions)), every_caption=True)
    seen = [visits[i]["captions"][visits[i]["caption_index"]] for i in range(len(visits))]
    assert sorted(seen) == sorted(c for _, _, h in order for c in h["captions"])


def test_merge_reaches_every_window_of_a_long_clip(shared, tmp_path):
  root, manifests = shared
  out = tmp_path / "windows"
  rule = durations.DurationRule(max_seconds=2.0, long_clips="window")
  corpus = prepare_lib.prepare(manifests, out, quiet=True, durations=rule, shard_megabytes=1e-6)
  assert len(corpus["sources"]["a"]["shards"]) == 5   # a record per shard: the merges rewrite several shards
  headers, _ = _records(out, corpus)
  windows = [headers[f"a-long#w{k}"] for k in range(3)]   # 5 s in windows of at most 2 s: 3 of 1.67 s
  assert all(w["captions"] == ["a long drone", "a low hum for seconds"] and w["sources"] == ["a", "b"]
             for w in windows)
  assert [w["window"] for w in windows] == [[0, 3], [1, 3], [2, 3]]
  # Counted per record, as the per-source caption counts are.
  assert corpus["duplicates"]["merged"]["a"]["b"]["captions_added"] == 1 + 3   # b-x: 1, b-long: 1 per window
  assert corpus["sources"]["a"]["captions"] == 4 + 1 + 3 * 2
  texts = (out / "captions.txt").read_text().splitlines()
  assert texts.count("a low hum for seconds") == 1   # captions.txt holds a clip's captions once, not per window
