"""Caption truncation: a caption too long for its EOS is cut without one (and its loss mask ends at the last kept
token), a short one keeps its EOS; validate and prepare report the share of captions cut at 32/64/128."""
import numpy as np
import pytest

from alp_jax.data import caption_lengths
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.data import validate as validate_lib
from alp_jax.data.tokenizer import EOS_ID, PAD_ID
from alp_jax.models import caption_decoder

from corpus_fixtures import caption_of_words, long_caption_corpus, write_manifest

MAX_LEN = 12
# Word counts per clip's captions, per source: around each reported length (n + 1 > L is cut at L).
WORD_COUNTS = {"long": [[30, 31, 200], [63, 64], [127, 128]], "short": [[3, 5], [31], [12]]}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  root = tmp_path_factory.mktemp("tok")
  (root / "captions.txt").write_text("\n".join(caption_of_words(n) + " a dog barks" for n in range(1, 40)) + "\n")
  return tokenizer_lib.Tokenizer(tokenizer_lib.train(root, vocab_size=64, quiet=True))


def test_long_caption_is_cut_without_eos_and_short_keeps_it(tok):
  long_text, short_text = caption_of_words(30), "a dog barks"
  long_ids, short_ids = tok.encode(long_text), tok.encode(short_text)
  assert len(long_ids) > MAX_LEN and len(short_ids) + 1 < MAX_LEN
  tokens, mask = tok.encode_padded([long_text, short_text], MAX_LEN)
  np.testing.assert_array_equal(tokens[0], long_ids[:MAX_LEN])         # the first MAX_LEN ids, no EOS
  assert EOS_ID not in tokens[0] and mask[0].all()
  expected_short = short_ids + [EOS_ID] + [PAD_ID] * (MAX_LEN - len(short_ids) - 1)
  np.testing.assert_array_equal(tokens[1], expected_short)
  assert mask[1].sum() == len(short_ids) + 1                            # the EOS counts, the padding not
  # The loss mask of either row mode ends at the last kept token of the cut caption.
  for parallel in (False, True):
    target = np.asarray(caption_decoder.caption_target_mask(tokens, mask, np.array([parallel] * 2)))
    assert target[0].all()
    assert target[1].sum() == len(short_ids) + (0 if parallel else 1)   # parallel rows never predict EOS


def test_boundary_a_caption_that_just_fits_keeps_its_eos():
  for n, cut in ((MAX_LEN - 1, False), (MAX_LEN, True), (MAX_LEN + 1, True)):
    row = tokenizer_lib.pad_caption(list(range(4, 4 + n)), MAX_LEN)
    assert caption_lengths.truncated(n, MAX_LEN) == cut
    assert (EOS_ID in row) != cut
    assert row[-1] == (min(n, MAX_LEN) + 3 if cut else EOS_ID)


def _expected(counts: list[int]) -> dict[str, float]:
  counts = np.asarray(counts)
  return {str(n): float(np.mean(counts >= n)) for n in caption_lengths.LENGTHS}


def test_validate_and_prepare_report_the_truncated_shares(tmp_path, capsys):
  manifest = long_caption_corpus(tmp_path / "corpus", WORD_COUNTS)
  by_source = {s: [n for clip in clips for n in clip] for s, clips in WORD_COUNTS.items()}
  everything = sum(by_source.values(), [])
  result = validate_lib.validate([manifest], decode_audio=False, quiet=True)
  prepared = prepare_lib.prepare([manifest], tmp_path / "out", quiet=True)["caption_lengths"]
  for summary in (result["caption_lengths"], prepared):
    assert summary["unit"] == "words" and summary["captions"] == len(everything)
    assert summary["truncated"] == pytest.approx(_expected(everything))
    for source, counts in by_source.items():
      assert summary["sources"][source]["truncated"] == pytest.approx(_expected(counts))
      assert summary["sources"][source]["max"] == max(counts)
    assert summary["median"] == sorted(everything)[(len(everything) - 1) // 2]
  assert validate_lib.main(["--manifest", str(manifest), "--no-audio"]) == 0
  out = capsys.readouterr().out
  for n, share in _expected(everything).items():   # the "all sources" row of the printed report
    assert f"at {n}: {100 * share:5.1f}%" in out.splitlines()[-1]


def test_token_counts_with_a_tokenizer(tok, tmp_path):
  texts = ["a dog barks", caption_of_words(40), caption_of_words(70)]
  manifest = write_manifest(tmp_path / "m.jsonl", [
      {"id": str(i), "audio": "missing.wav", "source": "s", "captions": [t]} for i, t in enumerate(texts)])
  summary = validate_lib.validate([manifest], decode_audio=False, quiet=True, tokenizer=tok.path)["caption_lengths"]
  assert summary["unit"] == "tokens" and summary["tokenizer"] == tok.path
  lengths = [len(tok.encode(t)) for t in texts]
  assert summary["max"] == max(lengths) and summary["max"] > 70   # subword pieces: more tokens than words
  assert summary["truncated"] == pytest.approx(_expected(lengths))
