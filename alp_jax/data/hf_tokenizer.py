"""A Hugging Face tokenizer.json (the tokenizer of a pretrained BERT / BART folder) under our id conventions.

  tok = tokenizer.Tokenizer("FOLDER/tokenizer.json")     # -> HfTokenizer (told apart by its JSON content)
  tokens, mask = tok.encode_padded(["a dog barks"], 16)  # our ids: caption, EOS, PAD
  tok.our_to_hf                                          # (V,) the checkpoint id of each of our ids

Our ids put PAD, UNK, BOS, EOS at 0..3 (alp_jax/data/caption_ids.py); here they are the checkpoint's pad token,
unknown token, and the two tokens its post-processor puts around a sentence (BERT: [CLS] ... [SEP]; BART /
RoBERTa: <s> ... </s>). Every other id keeps its order after them, so `our_to_hf` is a permutation of the
vocabulary and the models reorder their embedding rows once at load (hf_checkpoint.vocab_rows). Captions are
encoded without the post-processor's special tokens (we add EOS; the BERT encoder adds BOS = [CLS] in front).

The four tokens are read from tokenizer.json: BOS/EOS from its post_processor (BertProcessing, RobertaProcessing,
or TemplateProcessing's single-sentence template, also inside a Sequence), pad from its padding settings or an
added token named [PAD] / <pad>, unk from its model's unk_token or an added [UNK] / <unk>. A file that names
none of them is a ValueError saying which one is missing.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from etils import epath

from tokenizers import Tokenizer as RustTokenizer

from alp_jax.data import caption_ids

PAD_NAMES, UNK_NAMES = ("[PAD]", "<pad>"), ("[UNK]", "<unk>")


def _post_processors(node) -> list[dict]:
  if not isinstance(node, dict):
    return []
  if node.get("type") == "Sequence":
    return [p for child in node.get("processors", []) for p in _post_processors(child)]
  return [node]


def _sentence_tokens(spec: dict) -> tuple[str | None, str | None]:
  """(BOS, EOS) token strings from tokenizer.json's post_processor, or Nones."""
  for proc in _post_processors(spec.get("post_processor")):
    if proc.get("type") in ("BertProcessing", "RobertaProcessing"):
      return proc["cls"][0], proc["sep"][0]
    if proc.get("type") == "TemplateProcessing":
      single = proc.get("single", [])
      at = next((i for i, piece in enumerate(single) if "Sequence" in piece), None)
      if at is None:
        continue
      before = [p["SpecialToken"]["id"] for p in single[:at] if "SpecialToken" in p]
      after = [p["SpecialToken"]["id"] for p in single[at + 1:] if "SpecialToken" in p]
      if before and after:
        return before[-1], after[0]
  return None, None


def special_tokens(spec: dict, where: str) -> dict[str, str]:
  """{"pad", "unk", "bos", "eos"} -> token strings of a parsed tokenizer.json; ValueError naming a missing one."""
  added = [t.get("content") for t in spec.get("added_tokens", [])]
  padding = spec.get("padding") or {}
  model = spec.get("model") or {}
  bos, eos = _sentence_tokens(spec)
  found = {
      "pad": padding.get("pad_token") or next((t for t in added if t in PAD_NAMES), None),
      "unk": model.get("unk_token") or next((t for t in added if t in UNK_NAMES), None),
      "bos": bos,
      "eos": eos,
  }
  missing = [k for k, v in found.items() if not v]
  if missing:
    raise ValueError(f"{where}: cannot tell the {', '.join(missing)} token(s) of this tokenizer.json (BOS/EOS come "
                     f"from its post_processor, e.g. BERT's [CLS]/[SEP]; pad and unk from added tokens named "
                     f"{PAD_NAMES} / {UNK_NAMES}); use the tokenizer.json saved with the checkpoint")
  return found


class HfTokenizer:
  """tokenizer.json through the `tokenizers` library, with ids remapped to ours (see the module docstring); the
  interface of tokenizer.Tokenizer (path, sha1, vocab_size, encode, encode_padded, decode)."""

  def __init__(self, model_path: str | os.PathLike):
    model_path = os.fspath(model_path)
    self.path = model_path
    raw = epath.Path(model_path).read_bytes()
    self.sha1 = hashlib.sha1(raw).hexdigest()
    try:
      spec = json.loads(raw)
      self.hf = RustTokenizer.from_str(raw.decode("utf-8"))
    except Exception as e:   # a broken or foreign JSON file: say which file
      raise ValueError(f"{model_path}: not a Hugging Face tokenizer.json the `tokenizers` library can read "
                       f"({type(e).__name__}: {e})") from None
    self.special = special_tokens(spec, model_path)
    size = self.hf.get_vocab_size(with_added_tokens=True)
    ids = {}
    for role, token in self.special.items():
      token_id = self.hf.token_to_id(token)
      if token_id is None:
        raise ValueError(f"{model_path}: its {role} token {token!r} is not in the vocabulary")
      ids[role] = token_id
    if len(set(ids.values())) != 4:
      raise ValueError(f"{model_path}: pad, unk, BOS and EOS must be four different tokens, got {self.special}")
    first = [ids["pad"], ids["unk"], ids["bos"], ids["eos"]]
    rest = np.setdiff1d(np.arange(size), first)
    self.our_to_hf = np.concatenate([np.asarray(first), rest]).astype(np.int32)  # (V,)
    self.hf_to_our = np.argsort(self.our_to_hf).astype(np.int32)  # (V,)

  @property
  def vocab_size(self) -> int:
    return len(self.our_to_hf)

  def encode(self, text: str) -> list[int]:
    return self.hf_to_our[self.hf.encode(text, add_special_tokens=False).ids].tolist()

  def encode_padded(self, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> tokens int32 (N, max_len), mask bool (N, max_len): each row is `pad_caption(encode(text), max_len)`."""
    encodings = self.hf.encode_batch(list(texts), add_special_tokens=False)
    return caption_ids.pad_captions([self.hf_to_our[e.ids].tolist() for e in encodings], max_len)

  def decode(self, ids) -> str:
    """Stops at the first EOS; ignores PAD and BOS."""
    return self.hf.decode([int(self.our_to_hf[i]) for i in caption_ids.content_ids(ids)], skip_special_tokens=True)
