"""The grain input pipeline: prepared corpus -> host batches of fixed-shape numpy arrays.

Per source: ArrayRecord shards -> nested subset (hash of id) -> this host's share -> shuffle -> endless epochs.
Sources are mixed with weights proportional to hours x factor (the study's rule) or explicit weights, then each
visit picks one caption at random (or every caption is its own example), crops/pads the audio to a fixed length
with a mask (random crop for training, deterministic for evaluation), tokenizes, and batches.

Every random choice comes from grain's per-index RNG, so the pipeline is a pure function of (seed, step):
its iterator state (`iterator.get_state()`) restores the exact next batches.

Host batch (numpy), B = global batch / process count, S = crop_seconds * 16000, L = max_caption_tokens:
  audio int16 (B, S) | audio_mask bool (B, S) | caption_tokens int32 (B, L) | caption_mask bool (B, L)
  source int32 (B,) | clip_key int64 (B,) = source index * 2**40 + record index (identifies the clip)
  with data.label_task: labels float32 (B, C) multi-hot | label_weight float32 (B,)
`batch_spec` states this schema once (the trainer compiles against it).

Duration buckets (data.batch_seconds > 0, `bucketed_train_dataset`): instead of B x crop_seconds, each global batch
holds at most batch_seconds of real audio in one of a few fixed shapes (rows_k, bucket_seconds[k] x 16000), planned
globally by alp_jax/data/buckets.py so every process reads its slice of the same batch; `batch_specs` lists the
shapes (the trainer compiles each once). Padded rows have audio_mask all False (objectives.row_mask), no caption
tokens, label_weight 0, source and clip_key -1. docs/data.md "Training batches" has the details.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
from typing import Any

import grain
import ml_collections
import numpy as np
from etils import epath

from alp_jax.data import buckets as buckets_lib
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import records
from alp_jax.data import subsets
from alp_jax.data import tokenizer as tokenizer_lib

SAMPLE_RATE = 16000
_KEY_STRIDE = 2**40


def default_data_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      corpus_dir="",            # a prepared corpus (python -m alp_jax.data.prepare)
      tokenizer="",             # sentencepiece model; default <corpus_dir>/tokenizer.model (tokenizer.path_for);
                                # the trainer points it at the run's own copy, <workdir>/tokenizer.model
      tokenizer_sha1="",        # set by the trainer: sha1 of the run's copy (checked when a run is read back)
      sources=(),               # names of sources to use; empty = all
      mixture="hours",          # "hours": weight = hours x factor (study, default); "cropped_hours": weight = the
                                # hours a visit can use, sum over clips of min(duration, crop_seconds), x factor;
                                # "explicit": weight = factor (mixture_weights)
      source_weights={},        # source name -> factor (default 1.0)
      subset_fraction=1.0,      # nested subset (study: 400K < 1M < 4M < 10M of ~9.3M clips)
      caption_policy="random",  # "random": one caption per visit (study) | "every": each caption an example
      crop_seconds=10.0,        # fixed crop with padding mask (study: batches by total duration instead); always
                                # the crop of eval_dataset (validation loss)
      batch_seconds=0.0,        # > 0: training batches of at most this many seconds of real audio (global, all
                                # processes) in duration buckets, instead of batch_size rows x crop_seconds
                                # (study: 640 s per GPU x 8 = 5120; docs/data.md "Training batches")
      bucket_seconds=(3.0, 6.0, 10.0, 15.0, 30.0),  # batch_seconds only: bucket upper edges = padded lengths, one
                                # compiled step each; a clip longer than the last edge is cropped to it (study
                                # toolkit: utt_max_duration 30)
      max_caption_tokens=32,    # tokens incl. EOS; a longer caption is cut without EOS (study toolkit: BERT
                                # max_length 30; caption decoder 128, as cappa:base and hybrid:base)
      label_task="",            # a task of the manifests' labels -> batch["labels"] (B,C) multi-hot and
                                # batch["label_weight"] (B,) (supervised tagging objective)
      seed=0,
      worker_count=0,           # grain worker processes (0: threads in this process)
      num_threads=8,            # reader threads per process
      prefetch_buffer_size=64,  # elements
      emulate_process_count=0,  # >1 on a single process: build the global batch exactly as that many hosts
                                # would (each host's share, concatenated in process order); for debugging
                                # multi-host data layouts and for tests comparing against multi-process runs
  ))


def check_corpus_dir(cfg) -> None:
  """A ValueError when cfg.corpus_dir is empty (only the tiny configs name a corpus by default)."""
  if not cfg.get("corpus_dir"):
    raise ValueError("config.data.corpus_dir is not set: pass --config.data.corpus_dir=PATH (a prepared corpus, "
                     "python -m alp_jax.data.prepare)")


def source_names(cfg) -> list[str]:
  """The sources a pipeline reads, in the order of the batches' `source` index."""
  return list(cfg.sources) or sorted(prepare_lib.load_corpus(cfg.corpus_dir)["sources"])


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  name: str
  shards: tuple[str, ...]
  subset_key: np.ndarray
  num_captions: np.ndarray
  num_samples: np.ndarray
  hours: float


def load_sources(corpus_dir, names=()) -> list[SourceInfo]:
  corpus_dir = epath.Path(corpus_dir)
  corpus = prepare_lib.load_corpus(corpus_dir)
  available = corpus["sources"]
  names = list(names) or sorted(available)   # source_names(): the same order
  unknown = [n for n in names if n not in available]
  if unknown:
    raise ValueError(f"sources {unknown} are not in {corpus_dir}/corpus.json (it has {sorted(available)})")
  out = []
  for name in names:
    s = available[name]
    with (corpus_dir / s["index"]).open("rb") as f:
      index = dict(np.load(f))
    out.append(SourceInfo(name, tuple(os.fspath(corpus_dir / p) for p in s["shards"]), index["subset_key"],
                          index["num_captions"], index["num_samples"], s["hours"]))
  return out


class ClipSource(grain.sources.RandomAccessDataSource):
  """Random access to (record, caption) visits of one source; caption -1 means 'choose at random later'."""

  def __init__(self, source: SourceInfo, source_index: int, record_indices: np.ndarray, every_caption: bool):
    self._shards, self._source_index = source.shards, source_index
    if every_caption:
      counts = source.num_captions[record_indices]
      self._records = np.repeat(record_indices, counts)
      self._captions = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)
    else:
      self._records = record_indices
      self._captions = np.full(len(record_indices), -1)
    self._reader = None

  def __len__(self) -> int:
    return len(self._records)

  @property
  def visit_records(self) -> np.ndarray:
    """(visits,) the record index of each visit."""
    return self._records

  def __getitem__(self, i):
    if self._reader is None:  # opened lazily so the source pickles into grain workers
      self._reader = grain.sources.ArrayRecordDataSource(list(self._shards))
    record = int(self._records[i])
    example = records.decode_example(self._reader[record])
    example["caption_index"] = int(self._captions[i])
    example["source_index"] = self._source_index
    example["clip_key"] = self._source_index * _KEY_STRIDE + record
    return example

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_reader"] = None
    return state


def mixture_weights(sources: list[SourceInfo], cfg) -> list[float]:
  """The probability that a visit draws from each source (cfg.mixture, cfg.source_weights factors, default 1).

  "hours" (the study's rule and the default: the toolkit muxes sources with weight hours x weight): a source's
  weight is its total hours x factor. With a fixed crop a visit uses at most crop_seconds of a clip, so a source of
  long clips is visited more often per clip (each visit still using crop_seconds): hours over-weight long-form
  sources against the audio actually consumed.
  "cropped_hours": a source's weight is the hours a visit can use, sum over its clips of
  min(duration, crop_seconds), x factor; the hours rule applied to the corpus as the crop sees it, so a clip of
  crop length or longer is visited equally often whatever source it is in. Both count every clip of the source
  (not only the data.subset_fraction subset, a hash-random sample with about the same mix).
  "explicit": the weight is the factor.
  """
  factors = [float(cfg.source_weights.get(s.name, 1.0)) for s in sources]
  if cfg.mixture == "hours":
    weights = [s.hours * f for s, f in zip(sources, factors)]
  elif cfg.mixture == "cropped_hours":
    crop = int(round(cfg.crop_seconds * SAMPLE_RATE))
    weights = [float(np.minimum(s.num_samples, crop).sum()) / SAMPLE_RATE / 3600 * f
               for s, f in zip(sources, factors)]
  elif cfg.mixture == "explicit":
    weights = factors
  else:
    raise ValueError(f"data.mixture must be 'hours', 'cropped_hours' or 'explicit', "
                     f"got {cfg.mixture!r}")
  if any(w <= 0 for w in weights):
    raise ValueError(f"every mixture weight must be > 0, got {dict(zip([s.name for s in sources], weights))}")
  total = sum(weights)
  return [w / total for w in weights]


class ExampleTransform(grain.transforms.RandomMap):
  """Caption choice, crop/pad with mask, tokenization. The tokenizer loads lazily in each worker."""

  def __init__(self, tokenizer_path: str, crop_samples: int, max_tokens: int, train: bool,
               label_task: str = "", label_vocab: tuple[str, ...] = ()):
    self.tokenizer_path, self.crop_samples, self.max_tokens, self.train = tokenizer_path, crop_samples, max_tokens, train
    self.label_task, self.label_index = label_task, {label: i for i, label in enumerate(label_vocab)}
    self._tokenizer = None

  def random_map(self, example: dict, rng: np.random.Generator) -> dict[str, Any]:
    if self._tokenizer is None:
      self._tokenizer = tokenizer_lib.Tokenizer(self.tokenizer_path)
    captions = example["captions"]
    c = example["caption_index"]
    caption = captions[c if c >= 0 else (int(rng.integers(len(captions))) if self.train else 0)]
    audio = example["audio"]
    n, s = len(audio), self.crop_samples
    start = int(rng.integers(n - s + 1)) if (self.train and n > s) else 0
    clip = audio[start:start + s]
    padded = np.zeros(s, np.int16)
    padded[:len(clip)] = clip
    mask = np.zeros(s, bool)
    mask[:len(clip)] = True
    tokens, token_mask = self._tokenizer.encode_padded([caption], self.max_tokens)
    out = {"audio": padded, "audio_mask": mask, "caption_tokens": tokens[0], "caption_mask": token_mask[0],
           "source": np.int32(example["source_index"]), "clip_key": np.int64(example["clip_key"])}
    if self.label_task:
      labels = np.zeros(len(self.label_index), np.float32)
      value = example["labels"].get(self.label_task)
      for label in (value if isinstance(value, list) else [] if value is None else [value]):
        labels[self.label_index[str(label)]] = 1.0
      out["labels"], out["label_weight"] = labels, np.float32(value is not None)
    return out

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_tokenizer"] = None
    return state


def batch_spec(cfg, batch_size: int, num_classes: int = 0,
               samples: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of a batch of `batch_size` rows as this pipeline produces it (module docstring);
  `samples`: the audio length (default crop_seconds)."""
  samples = int(round(cfg.crop_seconds * SAMPLE_RATE)) if samples is None else samples
  tokens = cfg.max_caption_tokens
  spec = {"audio": ((batch_size, samples), np.int16), "audio_mask": ((batch_size, samples), np.bool_),
          "caption_tokens": ((batch_size, tokens), np.int32), "caption_mask": ((batch_size, tokens), np.bool_),
          "source": ((batch_size,), np.int32), "clip_key": ((batch_size,), np.int64)}
  if cfg.get("label_task"):
    spec.update(labels=((batch_size, num_classes), np.float32), label_weight=((batch_size,), np.float32))
  return spec


def bucket_shapes(cfg, row_multiple: int = 1, process_count: int = 1) -> list[buckets_lib.BucketShape]:
  """The duration buckets of data.batch_seconds; rows are multiples of lcm(row_multiple, process_count)."""
  return buckets_lib.bucket_shapes(cfg, math.lcm(int(row_multiple), int(process_count)))


def batch_specs(cfg, batch_size: int, num_classes: int = 0, *, row_multiple: int = 1,
                process_count: int = 1) -> list[dict[str, tuple[tuple[int, ...], np.dtype]]]:
  """Every global batch schema training produces: one (batch_size x crop_seconds), or one per duration bucket
  (data.batch_seconds > 0; its rows ignore batch_size). The trainer compiles its step once for each."""
  if not cfg.get("batch_seconds"):
    return [batch_spec(cfg, batch_size, num_classes)]
  return [batch_spec(cfg, shape.rows, num_classes, shape.samples)
          for shape in bucket_shapes(cfg, row_multiple, process_count)]


def label_vocabulary(cfg) -> list[str]:
  """The class order of data.label_task, from the corpus's labels.json."""
  path = epath.Path(cfg.corpus_dir) / prepare_lib.LABELS_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: re-run prepare on {cfg.corpus_dir} (it writes the label vocabulary)")
  vocab = json.loads(path.read_text())
  if cfg.label_task not in vocab:
    raise ValueError(f"data.label_task={cfg.label_task!r} is not a label task of {cfg.corpus_dir} "
                     f"(it has {sorted(vocab)})")
  return list(vocab[cfg.label_task])


def _transform(cfg, train: bool, samples: int | None = None) -> ExampleTransform:
  task = cfg.get("label_task", "")
  samples = int(round(cfg.crop_seconds * SAMPLE_RATE)) if samples is None else samples
  return ExampleTransform(os.fspath(tokenizer_lib.path_for(cfg)), samples,
                          cfg.max_caption_tokens, train=train, label_task=task,
                          label_vocab=tuple(label_vocabulary(cfg)) if task else ())


def check_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the {process_count} processes; "
                     f"set --config.batch_size to a multiple of {process_count}")
  return global_batch_size // process_count


def train_dataset(cfg, global_batch_size: int, *, process_index: int = 0, process_count: int = 1,
                  row_multiple: int = 1) -> grain.MapDataset:
  """Endless, shuffled, mixed MapDataset of host batches (index i = the i-th batch of this host). With
  data.batch_seconds > 0: duration-bucketed batches (`bucketed_train_dataset`; global_batch_size unused)."""
  if cfg.get("batch_seconds"):
    return bucketed_train_dataset(cfg, process_index=process_index, process_count=process_count,
                                  row_multiple=row_multiple)
  host_batch = check_batch_size(global_batch_size, process_count)
  sources = load_sources(cfg.corpus_dir, cfg.sources)
  datasets = []
  for i, source in enumerate(sources):
    indices = subsets.subset_indices(source.subset_key, cfg.subset_fraction)
    indices = indices[process_index::process_count]  # this host's share, disjoint across hosts
    if len(indices) == 0:
      raise ValueError(f"source {source.name!r} has no clips for process {process_index} at subset fraction "
                       f"{cfg.subset_fraction}; raise data.subset_fraction or drop the source")
    clips = ClipSource(source, i, indices, every_caption=cfg.caption_policy == "every")
    datasets.append(grain.MapDataset.source(clips).seed(cfg.seed + 7919 * i).shuffle().repeat())
  if cfg.caption_policy not in ("random", "every"):
    raise ValueError(f"data.caption_policy must be 'random' or 'every', got {cfg.caption_policy!r}")
  mixed = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, mixture_weights(sources, cfg))
  transform = _transform(cfg, train=True)
  return mixed.seed(cfg.seed + process_index).random_map(transform).batch(host_batch, drop_remainder=True)


class _BucketBatches:
  """Item i = this process's rows of global bucket batch i (see alp_jax/data/buckets.py)."""

  def __init__(self, clips: list[ClipSource], planner: buckets_lib.EpochPlanner,
               transforms: list[ExampleTransform], padding_rows: list[dict], seed: int, process_index: int,
               process_count: int):
    self.clips, self.planner, self.transforms, self.padding_rows = clips, planner, transforms, padding_rows
    self.seed, self.process_index, self.process_count = seed, process_index, process_count

  def __call__(self, i: int) -> dict:
    bucket, visits = self.planner.batch(int(i))
    rows = len(visits) // self.process_count
    first = self.process_index * rows
    examples = []
    for row, visit in enumerate(visits[first:first + rows], start=first):
      if visit == buckets_lib.PADDING:
        examples.append(self.padding_rows[bucket])
        continue
      source, local = self.planner.locate(int(visit))
      rng = np.random.default_rng([self.seed, int(i), row])   # by global row: the same on any process layout
      examples.append(self.transforms[bucket].random_map(self.clips[source][local], rng))
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _padding_row(cfg, samples: int, num_classes: int) -> dict:
  """A padded row: no audio (audio_mask all False, which marks the row as padding), no caption, no label,
  source and clip_key -1."""
  row = {k: np.zeros(shape[1:], dtype) for k, (shape, dtype) in batch_spec(cfg, 1, num_classes, samples).items()}
  row["caption_tokens"][:] = tokenizer_lib.PAD_ID
  row["source"], row["clip_key"] = np.int32(-1), np.int64(-1)
  return row


def bucketed_train_dataset(cfg, *, process_index: int = 0, process_count: int = 1,
                           row_multiple: int = 1) -> grain.MapDataset:
  """Endless MapDataset of this process's rows of duration-bucketed global batches (data.batch_seconds > 0).

  Every process plans the same global batches from the whole (subset) corpus and takes rows
  [p r, (p+1) r) of each, so all agree on each step's bucket shape (alp_jax/data/buckets.py)."""
  planner, clips = bucket_planner(cfg, row_multiple, process_count)
  task = cfg.get("label_task", "")
  num_classes = len(label_vocabulary(cfg)) if task else 0
  transforms = [_transform(cfg, train=True, samples=shape.samples) for shape in planner.shapes]
  padding = [_padding_row(cfg, shape.samples, num_classes) for shape in planner.shapes]
  batches = _BucketBatches(clips, planner, transforms, padding, cfg.seed, process_index, process_count)
  return grain.MapDataset.range(sys.maxsize).map(batches)


def bucket_planner(cfg, row_multiple: int = 1,
                   process_count: int = 1) -> tuple[buckets_lib.EpochPlanner, list[ClipSource]]:
  """The global plan of duration-bucketed batches (the same on every process) and the sources it reads."""
  if cfg.caption_policy not in ("random", "every"):
    raise ValueError(f"data.caption_policy must be 'random' or 'every', got {cfg.caption_policy!r}")
  shapes = bucket_shapes(cfg, row_multiple, process_count)
  sources = load_sources(cfg.corpus_dir, cfg.sources)
  clips, durations = [], []
  for i, source in enumerate(sources):
    indices = subsets.subset_indices(source.subset_key, cfg.subset_fraction)
    if len(indices) == 0:
      raise ValueError(f"source {source.name!r} has no clips at subset fraction {cfg.subset_fraction}; raise "
                       f"data.subset_fraction or drop the source")
    clip_source = ClipSource(source, i, indices, every_caption=cfg.caption_policy == "every")
    clips.append(clip_source)
    durations.append(source.num_samples[clip_source.visit_records] / SAMPLE_RATE)
  weights = mixture_weights(sources, cfg) if len(sources) > 1 else [1.0]
  return buckets_lib.EpochPlanner(durations, weights, shapes, cfg.seed), clips


def eval_dataset(cfg, global_batch_size: int, *, process_index: int = 0, process_count: int = 1,
                 drop_remainder: bool = False) -> grain.MapDataset:
  """One ordered pass: deterministic crop from the start, first caption, no shuffling."""
  host_batch = check_batch_size(global_batch_size, process_count)
  parts = []
  for i, source in enumerate(load_sources(cfg.corpus_dir, cfg.sources)):
    indices = subsets.subset_indices(source.subset_key, cfg.subset_fraction)[process_index::process_count]
    parts.append(grain.MapDataset.source(ClipSource(source, i, indices, every_caption=False)))
  ds = grain.MapDataset.concatenate(parts) if len(parts) > 1 else parts[0]
  transform = _transform(cfg, train=False)
  return ds.seed(cfg.seed).random_map(transform).batch(host_batch, drop_remainder=drop_remainder)


class _ConcatHosts:
  """Item i = the i-th batch of each emulated host, concatenated in process order."""

  def __init__(self, parts):
    self.parts = parts

  def __call__(self, i: int) -> dict:
    batches = [p[i] for p in self.parts]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def host_iterator(cfg, global_batch_size: int, *, process_index: int = 0, process_count: int = 1,
                  row_multiple: int = 1):
  """The training iterator of this process (see `train_dataset`), honouring data.emulate_process_count.
  row_multiple: bucket rows are multiples of it (the trainer's batch shards x grad_accum_steps)."""
  emulate = cfg.get("emulate_process_count", 0)
  if emulate and emulate > 1:
    if process_count != 1:
      raise ValueError("data.emulate_process_count is for single-process runs only")
    parts = [train_dataset(cfg, global_batch_size, process_index=p, process_count=emulate,
                           row_multiple=row_multiple) for p in range(emulate)]
    dataset = grain.MapDataset.range(len(parts[0])).map(_ConcatHosts(parts))
  else:
    dataset = train_dataset(cfg, global_batch_size, process_index=process_index, process_count=process_count,
                            row_multiple=row_multiple)
  return to_iterator(dataset, cfg)


def to_iterator(dataset: grain.MapDataset, cfg):
  """Threaded prefetch, plus worker processes when cfg.worker_count > 0. The iterator has get/set_state."""
  iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads,
                                                      prefetch_buffer_size=cfg.prefetch_buffer_size))
  if cfg.worker_count > 0:
    _mark_flags_parsed()  # grain reads its absl flags in this process and in each worker
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count),
                                  worker_init_fn=_worker_init)
  return iter(iter_ds)


def _mark_flags_parsed() -> None:
  # Outside an absl app (tests, notebooks, our argparse CLIs) flags are unparsed, and grain's flag reads would
  # raise UnparsedFlagAccessError; defaults are what we want there.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _worker_init(worker_index: int, worker_count: int) -> None:
  """Runs in each grain worker process (grain's mp_prefetch worker_init_fn) before it reads any data."""
  del worker_index, worker_count
  # The trainer owns shutdown: on SIGTERM it keeps stepping until every process agrees on a step (one or two
  # more batches), saves, and exits, which ends its workers. A scheduler or a terminal signals the whole process
  # group; a worker that died on the signal would stall the batches the trainer still needs.
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  _mark_flags_parsed()
