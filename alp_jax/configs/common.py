"""Pieces every config shares: data, frontend, optimizer, mesh, training loop settings.

A config file defines `get_config(arg)`; `arg` is the text after ':' on the command line, a comma-separated list
of variant names (e.g. `configs/clap.py:tiny`, `configs/clap.py:tiny,sigmoid`, or by module name
`alp_jax.configs.clap:tiny`). Single fields are overridden with `--config.field=value` (e.g.
`--config.batch_size=64 --config.data.corpus_dir=/data/cs10m`). Each config module declares the variants it
handles in `VARIANTS`; any other name is an error (`parse_variants`). Only the tiny configs have a corpus by
default (the demo corpus); every other size needs `--config.data.corpus_dir`.
"""
import pathlib

import ml_collections

from alp_jax import sharding
from alp_jax.audio import frontend
from alp_jax.data import pipeline
from alp_jax.models import zipformer
from alp_jax.train import optimizer

DEMO_CORPUS = "runs/demo/corpus"

# Variants every model config accepts: the audio encoder becomes the Zipformer, preset "m" (or "tiny" next to the
# tiny variant) for `zipformer`, the named preset for `zipformer_<preset>` (alp_jax/models/zipformer.py PRESETS).
ZIPFORMER_VARIANTS = ("zipformer",) + tuple(f"zipformer_{preset}" for preset in zipformer.PRESETS)


def parse_variants(arg, known: tuple[str, ...], where: str) -> set:
  """'tiny,sigmoid' -> {"tiny", "sigmoid"}; a name not in `known` is a ValueError naming `where` (the config
  module's __file__, shown as configs/NAME.py) and the known variants."""
  variants = {v.strip() for v in (arg or "").split(",") if v.strip()}
  unknown = sorted(variants - set(known))
  if unknown:
    path = pathlib.Path(where)
    raise ValueError(f"{path.parent.name}/{path.name}: unknown variant{'s' * (len(unknown) > 1)} "
                     f"{', '.join(map(repr, unknown))}; known variants: {', '.join(known)}")
  return variants


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 256              # global batch (study: ~640 s of audio per GPU x 8 V100, duration-bucketed:
                                  # data.batch_seconds=5120 does that, and then training ignores batch_size)
  c.total_steps = 100_000         # study: 600k steps from scratch
  c.grad_accum_steps = 1          # micro-batches per step; exact for every objective (see train/step.py)
  c.log_every = 50
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.keep_steps = ()               # steps saved and never deleted (a trunk's cooldown branch points: train/branch.py)
  c.branch_from = ""              # TRUNK_WORKDIR@STEP: start as a cooldown branch of that run (train/branch.py)
  c.best_metric = ""              # e.g. "val/loss": also keep the best checkpoint by this evaluator metric
  c.best_mode = "min"
  c.async_checkpoints = True
  c.eval_every = 0                # 0: no periodic evaluation
  c.evaluators = ml_collections.ConfigDict()  # name -> ConfigDict(type=..., every=..., ...), see evaluate/
  c.nonfinite = "stop"            # stop | skip: a non-finite loss/gradient never updates the parameters
  c.model_init = ""               # exported encoder or workdir to initialise the audio encoder from
  c.peak_flops_per_device = 0.0   # 0: measure a dense matmul at startup (for MFU)
  c.tensorboard = True
  c.data = pipeline.default_data_config()   # corpus_dir "": set it (only apply_tiny has a default corpus)
  c.frontend = frontend.default_frontend_config()
  c.optimizer = optimizer.default_optimizer_config()
  c.mesh = sharding.default_mesh_config()
  c.mesh.require_sharded = True
  c.distributed = ml_collections.ConfigDict(dict(initialize="auto", coordinator_address="", num_processes=0,
                                                 process_id=0))
  return c


def apply_relative_clipping(c: ml_collections.ConfigDict, scale: float = 2.0) -> None:
  """The study toolkit's clipping (ScaledAdam clipping_scale 2.0): clip at `scale` x the median of the last
  optimizer.clip_window gradient norms, instead of an absolute norm that a summed loss would exceed every step."""
  c.optimizer.clip_norm = 0.0
  c.optimizer.clip_relative = scale


def use_zipformer(c: ml_collections.ConfigDict, preset: str = "m") -> None:
  """config.model.audio := the Zipformer `preset` ("m" is the study toolkit's, "768" its 768-d one; docs/models.md),
  keeping the compute dtype the size variants chose. The per-stack lists stay editable afterwards
  (--config.model.audio.encoder_dim=...); `preset` itself is only a label once the lists are filled."""
  dtype = c.model.audio.get("dtype", "float32")
  c.model.audio = zipformer.default_config(preset)
  c.model.audio.dtype = dtype


def apply_zipformer_variants(c: ml_collections.ConfigDict, variants: set) -> None:
  """The ZIPFORMER_VARIANTS among `variants` (at most one), applied after the size variants."""
  chosen = sorted(variants & set(ZIPFORMER_VARIANTS))
  if len(chosen) > 1:
    raise ValueError(f"variants {', '.join(chosen)}: choose one Zipformer preset")
  if chosen == ["zipformer"]:
    use_zipformer(c, "tiny" if "tiny" in variants else "m")
  elif chosen:
    use_zipformer(c, chosen[0].removeprefix("zipformer_"))


# The paper's budgets (STUDY.md 4, [DIG]): 8 V100s x 640 s of audio per step, 600k steps from scratch, 200k steps
# from a supervised (AudioSet-tagging) encoder.
STUDY_SCRATCH_STEPS = 600_000
STUDY_INIT_STEPS = 200_000
STUDY_BATCH_SECONDS = 8 * 640.0
STUDY_VARIANTS = ("study", "study_init")


def study_variants(variants: set) -> set:
  """`study`/`study_init` imply the base sizes and (unless a zipformer_<preset> variant names another) Zipformer-M;
  -> the variants to apply, before the size variants are read."""
  if variants & set(STUDY_VARIANTS):
    if len(variants & set(STUDY_VARIANTS)) > 1:
      raise ValueError("variants study and study_init: choose one (from scratch or from a supervised encoder)")
    variants = variants | {"base"}
    if not variants & set(ZIPFORMER_VARIANTS):
      variants.add("zipformer")
  return variants


def apply_study(c: ml_collections.ConfigDict, variants: set) -> None:
  """The study's recipe on top of the base sizes and the Zipformer (docs/models.md and docs/objectives.md list what
  still differs). Each value names its source: [DIG] the paper, [CODE] the Auden toolkit's recipe, [INF] inferred.

  study_init: 200k steps from a supervised encoder: pass --config.model_init=PATH (an export or workdir of an
  AudioSet tagger with the same encoder, e.g. trained with configs/tagging.py:base,zipformer). The paper's init
  runs also start the text side from public BERT-base / BART-base checkpoints; pretraining here starts the text side
  from random weights (pretrained text sides are loaded for LiT only, docs/evaluation.md)."""
  chosen = variants & set(STUDY_VARIANTS)
  if not chosen:
    return
  c.total_steps = STUDY_INIT_STEPS if "study_init" in chosen else STUDY_SCRATCH_STEPS   # [DIG]
  # 640 s of audio per GPU x 8 GPUs [DIG], duration-bucketed in the toolkit (lhotse DynamicBucketingSampler,
  # [CODE]): data.batch_seconds packs whole clips (up to the last bucket edge, 30 s as the toolkit's
  # utt_max_duration; longer ones are cropped) into a few fixed padded shapes. batch_size is then unused by
  # training; it stays the 10 s-crop equivalent (512) for evaluators and plans that count clips.
  c.data.batch_seconds = STUDY_BATCH_SECONDS
  c.batch_size = int(STUDY_BATCH_SECONDS // 10)
  c.data.crop_seconds = 10.0
  opt = c.optimizer
  opt.name = "scaled_adam"          # [CODE] ScaledAdam, settings optimizer.scaled_adam (the toolkit's defaults)
  opt.learning_rate = 0.045         # [CODE] base lr
  opt.clip_norm = opt.clip_relative = 0.0   # ScaledAdam clips by itself: 2 x the median norm [CODE]
  opt.schedule = "eden2"            # [CODE] infinite muxed data with lr_steps_per_epoch 0 -> Eden2 (lr_batches
                                    # 7500, warmup 500 batches from 0.5: optimizer.eden)
  opt.average_period = 200          # [CODE] running average of the parameters every 200 steps; export --averaged
  for part in ("audio", "text", "decoder"):
    if part in c.model:
      c.model[part].dtype = "float32"   # [DIG] V100s, [CODE] use_fp16 False (bfloat16 is faster on TPU/GPU)
  if "decoder" in c.model:
    # [CODE] nn.TransformerDecoder(norm_first=False, bias=False), 8 heads (BART-base: 12)
    c.model.decoder.update(norm="post", use_bias=False, num_heads=8)


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a laptop CPU: tiny towers, short crops, small batches, the demo corpus (`make demo` builds it)."""
  c.data.corpus_dir = DEMO_CORPUS
  c.batch_size = 16
  c.total_steps = 60
  c.log_every = 10
  c.checkpoint_every = 30
  c.data.crop_seconds = 2.0
  c.data.max_caption_tokens = 24
  c.data.num_threads = 4
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 10
  c.frontend.spec_augment.update(num_time_masks=2, max_time_width=20, max_freq_width=10, time_warp_factor=0)
  c.mesh.min_sharded_size = 2**15
  c.mesh.require_sharded = False


def apply_demo(c: ml_collections.ConfigDict) -> None:
  """The demo's reference small-scale recipe (docs/representation.md has the measurements behind each choice):
  the tiny model on the demo corpus, long enough to learn and short enough for `make demo` on a 2-core CPU."""
  apply_tiny(c)
  c.total_steps = DEMO_STEPS
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 4        # steps 500..2000: the probe-vs-steps curve reads them
  c.optimizer.warmup_steps = 100
  # SpecAugment off: on the demo tasks it cost pitch class and speaker identity at every measured step (masked
  # frequency bands hide exactly the spectral detail those tasks need) and gained nothing measurable elsewhere.
  c.frontend.spec_augment.enabled = False


DEMO_STEPS = 2000
