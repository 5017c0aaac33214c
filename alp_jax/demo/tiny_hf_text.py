"""Tiny RANDOM checkpoints in the Hugging Face layout (BertModel, BartForConditionalGeneration), for tests and for
running the pretrained-text-side LiT path offline. They are NOT pretrained: the weights are random numbers and the
tokenizer is trained on the captions given here. They stand in for bert-base-uncased / bart-base, which the
project cannot download.

  python -m alp_jax.demo.tiny_hf_text --kind bert --task-dir TASK --out DIR [--width 64 --layers 2 --heads 4]
  python -m alp_jax.demo.tiny_hf_text --kind bart --task-dir TASK --out DIR

  from alp_jax.demo import tiny_hf_text
  tiny_hf_text.write_bert(DIR, captions, width=32, layers=2, heads=4, seed=0)

DIR gets what `save_pretrained` writes: config.json, model.safetensors (float32, the tensor names of
`transformers`), tokenizer.json: a WordPiece tokenizer with BERT's normaliser and [CLS]/[SEP] template (bert), or
a byte-level BPE with <s>/</s> (bart), trained on the captions with the `tokenizers` library. `--init hf` (the
CLI's default) draws the weights as `transformers` initialises a new model; `init="spread"` (the functions' default,
for tests) uses larger weights and random layer norms, so a wrong mapping of any tensor changes the outputs
(tests/test_hf_text.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# Not bert-base-uncased's ids (0, 100, 101, 102, 103) but, like them, not our 0..3 order either: loading must
# remap (hf_tokenizer.HfTokenizer.our_to_hf).
BERT_SPECIALS = ("[PAD]", "[MASK]", "[CLS]", "[UNK]", "[SEP]")
BART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
INITS = ("hf", "spread")


def bert_tokenizer(captions: list[str], vocab_size: int):
  """A WordPiece tokenizer like bert-base-uncased's (lowercasing normaliser, [CLS] $A [SEP] template)."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  tok.train_from_iterator(captions, trainers.WordPieceTrainer(vocab_size=vocab_size, show_progress=False,
                                                              special_tokens=list(BERT_SPECIALS)))
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                     special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  return tok


def bart_tokenizer(captions: list[str], vocab_size: int):
  """A byte-level BPE like bart-base's (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>; <s> $A </s>)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BART_SPECIALS), show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(captions, trainer)
  tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
  return tok


class _Init:
  """Random tensors: "hf" = what `transformers` initialises (normal(0, 0.02) weights, zero biases, unit
  LayerNorms); "spread" = larger weights and random LayerNorms, so a mis-mapped tensor shows in a test."""

  def __init__(self, kind: str, seed: int):
    if kind not in INITS:
      raise ValueError(f"unknown init {kind!r}; choose from {INITS}")
    self.spread, self.rng = kind == "spread", np.random.default_rng(seed)

  def normal(self, shape, std_spread: float, std_hf: float = 0.02) -> np.ndarray:
    return self.rng.normal(0, std_spread if self.spread else std_hf, shape).astype(np.float32)

  def linear(self, prefix: str, out_dim: int, in_dim: int, tensors: dict) -> None:
    tensors[prefix + ".weight"] = self.normal((out_dim, in_dim), 0.16)
    tensors[prefix + ".bias"] = self.normal((out_dim,), 0.02, 0.0)

  def norm(self, prefix: str, width: int, tensors: dict) -> None:
    tensors[prefix + ".weight"] = 1.0 + self.normal((width,), 0.1, 0.0)
    tensors[prefix + ".bias"] = self.normal((width,), 0.1, 0.0)


def _save(out: Path, config: dict, tensors: dict, tok) -> Path:
  from safetensors.numpy import save_file
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(config, indent=2))
  save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
  tok.save(str(out / "tokenizer.json"))
  (out / "NOT_PRETRAINED.txt").write_text("Random weights written by alp_jax.demo.tiny_hf_text: a stand-in for a "
                                          "pretrained checkpoint in the Hugging Face layout, not a pretrained "
                                          "model.\n")
  return out


def write_bert(out, captions: list[str], *, width: int = 32, layers: int = 2, heads: int = 4, mlp: int | None = None,
               max_positions: int = 64, vocab_size: int = 200, seed: int = 0, init: str = "spread") -> Path:
  """A random BertModel folder (tokenizer trained on `captions`; `init` as in _Init)."""
  rng = _Init(init, seed)
  tok = bert_tokenizer(captions, vocab_size)
  vocab, mlp = tok.get_vocab_size(), mlp or 4 * width
  config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab, "hidden_size": width,
            "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": mlp,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": max_positions, "type_vocab_size": 2, "initializer_range": 0.02,
            "layer_norm_eps": 1e-12, "pad_token_id": tok.token_to_id("[PAD]"),
            "position_embedding_type": "absolute", "use_cache": True, "_note": "random weights, NOT pretrained"}
  t: dict[str, np.ndarray] = {}
  t["embeddings.word_embeddings.weight"] = rng.normal((vocab, width), 0.5)
  t["embeddings.position_embeddings.weight"] = rng.normal((max_positions, width), 0.5)
  t["embeddings.token_type_embeddings.weight"] = rng.normal((2, width), 0.5)
  rng.norm("embeddings.LayerNorm", width, t)
  for i in range(layers):
    p = f"encoder.layer.{i}."
    for name in ("query", "key", "value"):
      rng.linear(p + "attention.self." + name, width, width, t)
    rng.linear(p + "attention.output.dense", width, width, t)
    rng.norm(p + "attention.output.LayerNorm", width, t)
    rng.linear(p + "intermediate.dense", mlp, width, t)
    rng.linear(p + "output.dense", width, mlp, t)
    rng.norm(p + "output.LayerNorm", width, t)
  rng.linear("pooler.dense", width, width, t)
  return _save(Path(out), config, t, tok)


def write_bart(out, captions: list[str], *, width: int = 32, layers: int = 2, heads: int = 4, mlp: int | None = None,
               max_positions: int = 64, vocab_size: int = 300, seed: int = 0, init: str = "spread") -> Path:
  """A random BartForConditionalGeneration folder (encoder and decoder; tokenizer trained on `captions`; `init` as
  in _Init)."""
  rng = _Init(init, seed)
  tok = bart_tokenizer(captions, vocab_size)
  vocab, mlp = tok.get_vocab_size(), mlp or 4 * width
  config = {"architectures": ["BartForConditionalGeneration"], "model_type": "bart", "vocab_size": vocab,
            "d_model": width, "encoder_layers": layers, "decoder_layers": layers,
            "encoder_attention_heads": heads, "decoder_attention_heads": heads, "encoder_ffn_dim": mlp,
            "decoder_ffn_dim": mlp, "activation_function": "gelu", "dropout": 0.1, "attention_dropout": 0.0,
            "activation_dropout": 0.0, "max_position_embeddings": max_positions, "scale_embedding": False,
            "init_std": 0.02, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            "decoder_start_token_id": 2, "forced_eos_token_id": 2, "is_encoder_decoder": True,
            "tie_word_embeddings": True, "use_cache": True, "_note": "random weights, NOT pretrained"}
  t: dict[str, np.ndarray] = {}
  t["model.shared.weight"] = rng.normal((vocab, width), 0.5)
  t["final_logits_bias"] = rng.normal((1, vocab), 0.1, 0.0)
  for side in ("encoder", "decoder"):
    p = f"model.{side}."
    t[p + "embed_positions.weight"] = rng.normal((max_positions + 2, width), 0.5)
    rng.norm(p + "layernorm_embedding", width, t)
    for i in range(layers):
      q = f"{p}layers.{i}."
      attentions = ("self_attn",) + (("encoder_attn",) if side == "decoder" else ())
      for attn in attentions:
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
          rng.linear(f"{q}{attn}.{name}", width, width, t)
        rng.norm(f"{q}{attn}_layer_norm", width, t)
      rng.linear(q + "fc1", mlp, width, t)
      rng.linear(q + "fc2", width, mlp, t)
      rng.norm(q + "final_layer_norm", width, t)
  return _save(Path(out), config, t, tok)


def task_captions(task_dir) -> list[str]:
  """Every caption of TASK_DIR/train.jsonl (a caption task's train split)."""
  captions = []
  with open(Path(task_dir) / "train.jsonl", encoding="utf-8") as f:
    for line in f:
      if line.strip():
        captions += list(json.loads(line).get("captions", []))
  return captions


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.demo.tiny_hf_text", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--kind", choices=("bert", "bart"), required=True)
  parser.add_argument("--task-dir", required=True, help="caption task folder: its train.jsonl captions train the "
                                                        "tokenizer")
  parser.add_argument("--out", required=True)
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--vocab-size", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--init", choices=INITS, default="hf",
                      help="hf: transformers' initialisation (default); spread: larger random weights (tests)")
  args = parser.parse_args(argv)
  captions = task_captions(args.task_dir)
  if not captions:
    print(f"error: {args.task_dir}/train.jsonl holds no captions", file=sys.stderr)
    return 2
  write = write_bert if args.kind == "bert" else write_bart
  out = write(args.out, captions, width=args.width, layers=args.layers, heads=args.heads,
              vocab_size=args.vocab_size, max_positions=128, seed=args.seed, init=args.init)
  print(f"[tiny_hf_text] wrote a RANDOM (not pretrained, {args.init} init) {args.kind.upper()} checkpoint, "
        f"width {args.width}, "
        f"{args.layers} layers, tokenizer trained on {len(captions)} captions: {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
