"""Pretrained text sides from local Hugging Face folders: BERT encoder and BART decoder (alp_jax/models/hf_bert.py,
hf_bart.py), their tokenizer.json (alp_jax/data/hf_tokenizer.py), loading errors, cached decoding and the
"only cross-attention trains" freezing rules. The forward passes are compared with `transformers` (the
reference implementation; the `hf-reference` extra, slow) on tiny random checkpoints written by
alp_jax/demo/tiny_hf_text.py."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.demo import tiny_hf_text
from alp_jax.models import caption_decoder, decoding, hf_bart, hf_bert, hf_checkpoint
from alp_jax.train import freeze

CAPTIONS = ["a dog barks twice", "a man speaks slowly in a low voice", "piano chord in c major",
            "rain falls on a tin roof", "a woman sings a high note", "birds chirp near a busy road"] * 3
TEXTS = ["a dog barks", "a woman sings a high note near the road, slowly"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  bert = tiny_hf_text.write_bert(root / "bert", CAPTIONS, width=32, layers=2, heads=4, vocab_size=120, seed=1)
  bart = tiny_hf_text.write_bart(root / "bart", CAPTIONS, width=32, layers=2, heads=4, vocab_size=300, seed=2)
  return bert, bart


def _build(make, params: dict):
  """The module with the checkpoint's parameters; the ones it lacks (hf_bart.NEW_PARAMS) seeded random. Built
  abstractly (a random init would compile for many seconds) and filled, as train/text_init.py fills a state."""
  with nnx.use_eager_sharding(False):
    module = nnx.eval_shape(make)
  graphdef, state, rest = nnx.split(module, nnx.Param, ...)
  rng = np.random.default_rng(0)
  flat = []
  for key, variable in nnx.to_flat_state(state):
    name = "/".join(map(str, key))
    value = params[name] if name in params else rng.normal(0, 0.3, variable.shape).astype(np.float32)
    assert value.shape == variable.shape, name
    flat.append((key, variable.replace(jnp.asarray(value))))
  return nnx.merge(graphdef, nnx.from_flat_state(flat), rest)


def _bert(folder):
  tok = tokenizer_lib.Tokenizer(folder / "tokenizer.json")
  arch = hf_bert.architecture(folder)
  params = hf_bert.load_params(folder, arch, tok.our_to_hf)
  return tok, _build(lambda: hf_bert.HfBertEncoder(arch, vocab_size=tok.vocab_size, rngs=nnx.Rngs(0)), params)


def _bart(folder, audio_width=None):
  tok = tokenizer_lib.Tokenizer(folder / "tokenizer.json")
  arch = hf_bart.architecture(folder)
  params = hf_bart.load_params(folder, arch, tok.our_to_hf)
  decoder = _build(lambda: hf_bart.HfBartDecoder(arch, vocab_size=tok.vocab_size, max_len=12, rngs=nnx.Rngs(0),
                                                 audio_width=audio_width or arch["d_model"]), params)
  names = {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(decoder, nnx.Param))}
  assert names - set(params) == {n for n in names if n.split("/")[0] in hf_bart.NEW_PARAMS}
  return tok, decoder


def _frames(batch=2, frames=5, width=32, seed=0):
  rng = np.random.default_rng(seed)
  audio = rng.standard_normal((batch, frames, width)).astype(np.float32)
  mask = np.ones((batch, frames), bool)
  mask[1, 3:] = False
  return jnp.asarray(audio), jnp.asarray(mask)


def test_tokenizer_json_gets_our_ids_and_matches_the_checkpoint_ids(folders):
  for folder, bos, eos in ((folders[0], "[CLS]", "[SEP]"), (folders[1], "<s>", "</s>")):
    tok = tokenizer_lib.Tokenizer(folder / "tokenizer.json")   # told apart from sentencepiece by its content
    assert type(tok).__name__ == "HfTokenizer" and tok.special["bos"] == bos and tok.special["eos"] == eos
    hf_ids = [tok.hf.token_to_id(t) for t in (tok.special["pad"], tok.special["unk"], bos, eos)]
    assert tok.our_to_hf[:4].tolist() == hf_ids and hf_ids != [0, 1, 2, 3]   # a real remapping
    assert sorted(tok.our_to_hf.tolist()) == list(range(tok.vocab_size))
    tokens, mask = tok.encode_padded(TEXTS, 40)
    for text, row, valid in zip(TEXTS, tokens, mask):
      ours = [tokenizer_lib.BOS_ID] + row[valid].tolist()   # BOS + caption + EOS in our ids
      assert tok.our_to_hf[ours].tolist() == tok.hf.encode(text).ids   # = the checkpoint's own special tokens
      assert tok.decode(row) == tok.hf.decode(tok.hf.encode(text).ids, skip_special_tokens=True)
    short, short_mask = tok.encode_padded(TEXTS[1:], 4)   # cut without EOS, as pad_caption does
    assert short_mask.all() and tokenizer_lib.EOS_ID not in short


def test_missing_folder_file_or_tensor_is_a_clear_error(folders, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hf_bert.architecture(tmp_path / "nowhere")
  broken = tmp_path / "bert"
  shutil.copytree(folders[0], broken)
  (broken / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
    hf_bert.load_params(broken, hf_bert.architecture(broken), None)
  (broken / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match=r"no config\.json"):
    hf_bert.architecture(broken)
  # A tensor missing from the weights is named.
  from safetensors.numpy import load_file, save_file
  partial = tmp_path / "bart"
  shutil.copytree(folders[1], partial)
  tensors = load_file(str(partial / "model.safetensors"))
  del tensors["model.decoder.layers.1.encoder_attn.k_proj.weight"]
  save_file(tensors, str(partial / "model.safetensors"))
  with pytest.raises(KeyError, match=r"'model\.decoder\.layers\.1\.encoder_attn\.k_proj\.weight' is missing"):
    hf_bart.load_params(partial, hf_bart.architecture(partial), None)
  # A config it cannot run, and a tokenizer.json that does not say its sentence tokens.
  config = json.loads((partial / "config.json").read_text())
  (partial / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
  with pytest.raises(ValueError, match="activation_function 'relu'"):
    hf_bart.architecture(partial)
  spec = json.loads((partial / "tokenizer.json").read_text())
  (partial / "tokenizer.json").write_text(json.dumps({**spec, "post_processor": None}))
  with pytest.raises(ValueError, match="cannot tell the bos, eos token"):
    tokenizer_lib.Tokenizer(partial / "tokenizer.json")


def test_bart_decode_step_equals_the_teacher_forced_logits(folders):
  """The key/value cache path (init_cache / decode_step, what decoding.py's greedy and beam search call) gives
  __call__'s logits at every position, for 2 rows per clip; eager, tiny."""
  tok, decoder = _bart(folders[1], audio_width=24)   # 24-wide frames: the fresh audio projection is in the path
  frames, mask = _frames(width=24)
  tokens, _ = tok.encode_padded(["a dog barks near a road", "rain falls", "a man sings", "birds chirp"], 6)

  @nnx.jit
  def both(decoder, tokens):   # one compilation: the teacher-forced pass and 6 cached steps
    full = jnp.ones((4, 6), bool)
    want = decoder(tokens, full, jnp.repeat(frames, 2, axis=0), jnp.repeat(mask, 2, axis=0))  # (B*K,L,V)
    cache = decoder.init_cache(frames, mask, max_len=6, beams=2)
    inputs = caption_decoder.shift_right(tokens).reshape(2, 2, 6)  # (B,K,L)

    def step(cache, position_inputs):  # (B,K) inputs of one position
      logits, cache = decoder.decode_step(position_inputs, cache)  # (B,K,V)
      return cache, logits.reshape(4, -1)

    _, steps = jax.lax.scan(step, cache, jnp.moveaxis(inputs, 2, 0))  # (L,B*K,V)
    return want, jnp.moveaxis(steps, 0, 1)  # (B*K,L,V) each

  want, got = both(decoder, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_bart_cached_decoding_equals_uncached_and_scoring(folders):
  tok, decoder = _bart(folders[1], audio_width=24)
  frames, mask = _frames(width=24)
  for beam in (1, 3):
    if beam == 1:
      cached = decoding.greedy_decode(decoder, frames, mask, max_len=8)
      plain = decoding.greedy_decode(decoder, frames, mask, max_len=8, kv_cache=False)
    else:
      cached = decoding.beam_search(decoder, frames, mask, max_len=8, beam_size=beam)
      plain = decoding.beam_search(decoder, frames, mask, max_len=8, beam_size=beam, kv_cache=False)
    np.testing.assert_array_equal(np.asarray(cached[0]), np.asarray(plain[0]))
    np.testing.assert_allclose(np.asarray(cached[2]), np.asarray(plain[2]), rtol=1e-5, atol=1e-5)
    scores = decoding.score_captions(decoder, frames, mask, cached[0], cached[1])
    np.testing.assert_allclose(np.asarray(scores), np.asarray(cached[2]), rtol=1e-5, atol=1e-5)


def test_only_cross_attention_and_the_audio_projection_train(folders):
  """The study's LiT captioning recipe as freezing rules: "*" parts and "!" exceptions (train/freeze.py)."""
  _, decoder = _bart(folders[1], audio_width=24)
  params = {"decoder": nnx.to_pure_dict(nnx.state(decoder, nnx.Param)), "audio_encoder": {"w": np.zeros(3)}}
  from alp_jax.evaluate import lit
  rules = lit.PRETRAINED_DECODER_FROZEN
  flat = jax.tree_util.tree_flatten_with_path(freeze.frozen_mask(params, ("audio_encoder",) + rules))[0]
  trainable = {"/".join(freeze.leaf_path(k)) for k, frozen in flat if not frozen}
  want = {f"decoder/blocks/{i}/{part}/{name}" for i in range(2)
          for part, names in (("cross_attention", ("query_kernel", "key_kernel", "value_kernel", "query_bias",
                                                   "key_bias", "value_bias", "out_kernel", "out_bias")),
                              ("cross_attention_norm", ("scale", "bias"))) for name in names}
  assert trainable == want | {"decoder/audio_projection"}
  with pytest.raises(ValueError, match="unknown parameter group '!decoder/blocks/\\*/cross_attn'"):
    freeze.frozen_mask(params, ("decoder", "!decoder/blocks/*/cross_attn"))


def test_lit_config_takes_the_checkpoints_and_refuses_what_cannot_work(folders, encoder_dir, tmp_path):
  from alp_jax.evaluate import lit
  bert, bart = folders
  kw = dict(steps=3, batch_size=8, seed=0)
  config = lit.lit_config(encoder_dir, tmp_path, config_spec="configs/cappa.py:tiny", decoder_checkpoint=bart, **kw)
  assert config.model.decoder.pretrained == str(bart) and config.data.tokenizer == str(bart / "tokenizer.json")
  assert config.loss.parallel_fraction == 0.0
  assert tuple(config.optimizer.frozen) == ("audio_encoder",) + lit.PRETRAINED_DECODER_FROZEN
  # A decoder as wide as the encoder's frames needs no audio projection, so the rules do not name one.
  width = lit._audio_width(config.model.audio)
  assert width != 32
  wide = tiny_hf_text.write_bart(tmp_path / "wide", CAPTIONS, width=width, layers=1, heads=4, vocab_size=300)
  config = lit.lit_config(encoder_dir, tmp_path, config_spec="configs/cappa.py:tiny", decoder_checkpoint=wide, **kw)
  assert "!decoder/audio_projection" not in config.optimizer.frozen and "decoder" in config.optimizer.frozen
  config = lit.lit_config(encoder_dir, tmp_path, config_spec="configs/clap.py:tiny", text_checkpoint=bert, **kw)
  assert config.model.text.pretrained == str(bert) and tuple(config.optimizer.frozen) == ("audio_encoder",)
  with pytest.raises(ValueError, match="has no caption decoder"):
    lit.lit_config(encoder_dir, tmp_path, config_spec="configs/clap.py:tiny", decoder_checkpoint=bart, **kw)
  with pytest.raises(ValueError, match="different tokenizers.*two LiT runs"):
    lit.lit_config(encoder_dir, tmp_path, config_spec="configs/hybrid.py:tiny", text_checkpoint=bert,
                   decoder_checkpoint=bart, **kw)
  bare = tmp_path / "bare"
  shutil.copytree(bert, bare)
  (bare / "tokenizer.json").unlink()
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    lit.lit_config(encoder_dir, tmp_path, config_spec="configs/clap.py:tiny", text_checkpoint=bare, **kw)


def _transformers():
  return pytest.importorskip("transformers", reason="the reference comparison needs the hf-reference extra "
                                                    "(pip install -e .[hf-reference])")


@pytest.mark.slow
def test_bert_encoder_equals_transformers(folders):
  transformers = _transformers()
  import torch
  tok, encoder = _bert(folders[0])
  tokens, mask = tok.encode_padded(TEXTS, 14)
  pooled, out = encoder(jnp.asarray(tokens), jnp.asarray(mask))
  reference = transformers.BertModel.from_pretrained(folders[0], attn_implementation="eager").eval()
  ids = tok.our_to_hf[np.concatenate([np.full((2, 1), tokenizer_lib.BOS_ID), tokens], axis=1)]
  attention = np.concatenate([np.ones((2, 1), bool), mask], axis=1)
  with torch.no_grad():
    want = reference(input_ids=torch.as_tensor(ids, dtype=torch.long),
                     attention_mask=torch.as_tensor(attention, dtype=torch.long)).last_hidden_state.numpy()
  got = np.asarray(out["token_states"])
  np.testing.assert_allclose(got[attention], want[attention], rtol=1e-5, atol=2e-5)   # valid positions
  np.testing.assert_allclose(np.asarray(pooled), want[:, 0], rtol=1e-5, atol=2e-5)   # [CLS]


@pytest.mark.slow
def test_bart_decoder_logits_equal_transformers(folders):
  transformers = _transformers()
  import torch
  tok, decoder = _bart(folders[1])
  tokens, mask = tok.encode_padded(TEXTS, 12)
  frames, frame_mask = _frames()
  logits = np.asarray(decoder(jnp.asarray(tokens), jnp.asarray(mask), frames, frame_mask))  # (B,L,V) our ids
  reference = transformers.BartForConditionalGeneration.from_pretrained(folders[1],
                                                                        attn_implementation="eager").eval()
  inputs = tok.our_to_hf[np.asarray(caption_decoder.shift_right(jnp.asarray(tokens)))]
  with torch.no_grad():
    want = reference(attention_mask=torch.as_tensor(np.array(frame_mask), dtype=torch.long),
                     decoder_input_ids=torch.as_tensor(inputs, dtype=torch.long),
                     decoder_attention_mask=torch.as_tensor(mask, dtype=torch.long),
                     encoder_outputs=(torch.as_tensor(np.array(frames)),)).logits.numpy()  # (B,L,V) hf ids
  np.testing.assert_allclose(logits[mask], want[..., tok.our_to_hf][mask], rtol=1e-5, atol=2e-5)


@pytest.mark.slow
def test_lit_with_a_pretrained_decoder_trains_only_its_cross_attention(tmp_path, encoder_dir):
  """lit.train_text_side with a BART folder: the trainer loads the checkpoint (train/text_init.py), the run reads
  captions with its tokenizer.json, and after 3 steps every decoder parameter but the cross-attention (and the new
  audio projection) is still the checkpoint's, bit for bit; the run decodes captions."""
  from conftest import write_caption_task
  from alp_jax.evaluate import lit
  from alp_jax.evaluate import run_model
  from alp_jax.train import runs
  task = write_caption_task(tmp_path / "task", clips=24)
  bart = tiny_hf_text.write_bart(tmp_path / "bart", tiny_hf_text.task_captions(task), width=32, layers=2, heads=4,
                                 vocab_size=300, seed=2)
  workdir = lit.train_text_side(encoder_dir, task, tmp_path / "run", config_spec="configs/cappa.py:tiny", steps=3,
                                batch_size=8, decoder_checkpoint=bart, log=None,
                                overrides={"data.num_threads": 2, "tensorboard": False, "mesh.num_devices": 1,
                                           "peak_flops_per_device": 1e9})
  config, _, state, _ = runs.restore(workdir)
  assert config.model.decoder.pretrained == str(bart) and config.model.decoder.pretrained_arch.d_model == 32
  assert config.loss.parallel_fraction == 0.0 and tuple(config.optimizer.frozen) == (
      lit.FROZEN + lit.PRETRAINED_DECODER_FROZEN)
  tok = runs.tokenizer(workdir, config, log=None)
  assert tok.sha1 == tokenizer_lib.Tokenizer(bart / "tokenizer.json").sha1
  want = hf_bart.load_params(bart, hf_bart.architecture(bart), tok.our_to_hf)
  got = {"/".join(freeze.leaf_path(k)[1:]): np.asarray(v)
         for k, v in jax.tree_util.tree_flatten_with_path(jax.device_get(state["params"]))[0]
         if freeze.leaf_path(k)[0] == "decoder"}
  trained = {k for k in want if "/cross_attention" in k}
  for key, value in want.items():
    if key in trained:
      assert not np.array_equal(got[key], value), key
    else:
      np.testing.assert_array_equal(got[key], value, err_msg=key)
  model = run_model.RunModel.from_workdir(workdir)
  assert type(model.decoder).__name__ == "HfBartDecoder"
  frames = [np.random.default_rng(0).standard_normal((8, model.encoder.output_dim)).astype(np.float32)]
  [caption] = model.generate(frames)   # cached greedy decoding through the run's tokenizer.json
  assert isinstance(caption, str)
  texts = ["a high pitched tone", "a deep steady hum"]
  scores = model.log_likelihoods(frames, texts)
  assert scores.shape == (1, 2) and np.all(np.isfinite(scores)) and np.all(scores < 0)
