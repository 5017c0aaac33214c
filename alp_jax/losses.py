"""Training objectives as pure functions: contrastive (softmax, sigmoid, ring-chunked sigmoid), captioning and
supervised tagging.

Every loss casts its inputs to float32 before any arithmetic, so a bf16 model still gets float32 logits, log-softmaxes
and sums. The formulas, the study's settings and our defaults are written out in docs/objectives.md.

Dimension legend:
  B  global batch (pairs of audio clip and caption)
  n  per-device batch inside `contrastive_sigmoid_chunked` (n = B / number of batch shards)
  D  joint embedding width
  L  caption length in tokens
  V  vocabulary size
  C  tagging classes

Padded rows (duration-bucketed batches, data.batch_seconds): every contrastive loss and the embedding regulariser take
an optional `valid` (B,) bool; a row with valid False is neither a positive nor a negative of any other row and
contributes nothing to the value or the gradients; means and counts run over the valid rows only. None: all valid.

Contrastive embeddings are expected L2-normalised by the caller (the towers normalise); the losses do not normalise
again, so that a caller may deliberately pass unnormalised vectors. Under `jax.jit` with global arrays sharded on the
batch axes, `audio @ text.T` over the global batch is exactly the study's "gathered negatives": XLA inserts the
all-gather (and its transpose in the backward pass) itself.
"""
from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

Scalar = float | jax.Array


def _f32(x: jax.Array | float) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def contrastive_softmax(audio_emb: jax.Array, text_emb: jax.Array, temperature: Scalar,
                        reduction: str = "mean", valid: jax.Array | None = None) -> jax.Array:
  """Symmetric InfoNCE over the batch: every other pair in the batch is a negative.

  Args:
    audio_emb: (B, D) L2-normalised audio embeddings.
    text_emb: (B, D) L2-normalised caption embeddings; row i is the caption of audio row i.
    temperature: the temperature value tau (python float or jnp scalar; a learnable log-temperature lives in the
      model, which passes exp of it here). Logits are a_i . t_j / tau.
    reduction: 'mean' -> (mean_i L_a2t_i + mean_i L_t2a_i) / 2, our default, independent of B;
      'sum' -> sum_i L_a2t_i + sum_i L_t2a_i, the study toolkit's form (both directions summed over the batch,
      no halving; equals 2 B times 'mean').
    valid: (B,) bool, False on padded rows (module docstring); B above then counts the valid rows.

  Returns:
    A float32 scalar.
  """
  audio_emb, text_emb = _f32(audio_emb), _f32(text_emb)
  logits = jnp.einsum("bd,cd->bc", audio_emb, text_emb) / _f32(temperature)  # (B, D) x (B, D) -> (B, B)
  if valid is not None:
    valid = valid.astype(bool)
    pairs = valid[:, None] & valid[None, :]  # (B, B): padded rows and columns leave every softmax
    logits = jnp.where(pairs, logits, jnp.finfo(jnp.float32).min)
  audio_to_text = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))  # (B,): row i against all captions
  text_to_audio = -jnp.diagonal(jax.nn.log_softmax(logits, axis=0))  # (B,): caption i against all clips
  count = audio_emb.shape[0]
  if valid is not None:
    audio_to_text, text_to_audio = jnp.where(valid, audio_to_text, 0.0), jnp.where(valid, text_to_audio, 0.0)
    count = jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)
  if reduction == "mean":
    return 0.5 * (jnp.sum(audio_to_text) + jnp.sum(text_to_audio)) / count
  if reduction == "sum":
    return jnp.sum(audio_to_text) + jnp.sum(text_to_audio)
  raise ValueError(f"contrastive_softmax: reduction must be 'mean' or 'sum', got {reduction!r}")


def _block_labels(rows: int, cols: int, positives_on_diagonal: bool) -> jax.Array:
  """(rows, cols) labels: +1 on the diagonal if this block pairs each clip with its own caption, -1 elsewhere."""
  if positives_on_diagonal:
    return 2.0 * jnp.eye(rows, cols, dtype=jnp.float32) - 1.0
  return -jnp.ones((rows, cols), jnp.float32)


def _pair_weights(audio_valid: jax.Array | None, text_valid: jax.Array | None) -> jax.Array | float:
  """(n, m) 1.0 where both rows are real, 0.0 where either is padding; 1.0 without masks."""
  if audio_valid is None:
    return 1.0
  return _f32(audio_valid)[:, None] * _f32(text_valid)[None, :]


def _sigmoid_block_loss(audio_block: jax.Array, text_block: jax.Array, temperature: jax.Array, bias: jax.Array,
                        positives_on_diagonal: bool, audio_valid: jax.Array | None = None,
                        text_valid: jax.Array | None = None) -> jax.Array:
  """Sum over one block of pairs of -log_sigmoid(label * logit) (pairs with a padded row left out)."""
  logits = jnp.einsum("nd,md->nm", audio_block, text_block) / temperature + bias  # (n, D) x (m, D) -> (n, m)
  labels = _block_labels(*logits.shape, positives_on_diagonal)  # (n, m)
  return -jnp.sum(_pair_weights(audio_valid, text_valid) * jax.nn.log_sigmoid(labels * logits))


def _sigmoid_block_grads(audio_block: jax.Array, text_block: jax.Array, temperature: jax.Array, bias: jax.Array,
                         positives_on_diagonal: bool, scale: jax.Array, audio_valid: jax.Array | None = None,
                         text_valid: jax.Array | None = None) -> tuple[jax.Array, ...]:
  """Gradients of scale * _sigmoid_block_loss w.r.t. (audio_block, text_block, temperature, bias), by hand.

  d/dz [-log_sigmoid(y z)] = -y sigmoid(-y z); z = s / temperature + bias with s = a . t, so
  dz/da = t / temperature, dz/dt = a / temperature, dz/dtemperature = -s / temperature^2, dz/dbias = 1.
  """
  similarity = jnp.einsum("nd,md->nm", audio_block, text_block)  # (n, D) x (m, D) -> (n, m)
  logits = similarity / temperature + bias  # (n, m)
  labels = _block_labels(*logits.shape, positives_on_diagonal)  # (n, m)
  d_logits = -scale * _pair_weights(audio_valid, text_valid) * labels * jax.nn.sigmoid(-labels * logits)  # (n, m)
  d_audio = jnp.einsum("nm,md->nd", d_logits, text_block) / temperature  # (n, m) x (m, D) -> (n, D)
  d_text = jnp.einsum("nm,nd->md", d_logits, audio_block) / temperature  # (n, m) x (n, D) -> (m, D)
  d_temperature = -jnp.sum(d_logits * similarity) / jnp.square(temperature)
  d_bias = jnp.sum(d_logits)
  return d_audio, d_text, d_temperature, d_bias


def contrastive_sigmoid(audio_emb: jax.Array, text_emb: jax.Array, temperature: Scalar,
                        bias: Scalar, valid: jax.Array | None = None) -> jax.Array:
  """SigLIP loss: an independent binary decision for every (clip, caption) pair of the batch.

  logits = a @ t.T / temperature + bias; labels +1 on the diagonal, -1 elsewhere;
  loss = -sum_ij log_sigmoid(label_ij * logit_ij) / B (summed over all B^2 pairs, averaged over rows).
  SigLIP's init t' = log 10, b = -10 multiplies by exp(t') = 10, i.e. temperature = exp(-t') = 0.1 here.

  Args:
    audio_emb: (B, D) L2-normalised audio embeddings.
    text_emb: (B, D) L2-normalised caption embeddings.
    temperature: the temperature value (divides the cosine similarities).
    bias: the learnable logit bias value.
    valid: (B,) bool, False on padded rows: only pairs of two valid rows count, and B counts the valid rows.

  Returns:
    A float32 scalar.
  """
  audio_emb, text_emb = _f32(audio_emb), _f32(text_emb)
  total = _sigmoid_block_loss(audio_emb, text_emb, _f32(temperature), _f32(bias), True, valid, valid)
  if valid is None:
    return total / audio_emb.shape[0]
  return total / jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)


def contrastive_sigmoid_chunked(audio_emb: jax.Array, text_emb: jax.Array, temperature: Scalar, bias: Scalar, *,
                                mesh: Mesh, batch_axes: Sequence[str] = ("data", "fsdp"),
                                valid: jax.Array | None = None) -> jax.Array:
  """`contrastive_sigmoid` computed block by block around a ring of devices; same value and gradients.

  Forward: each device holds its own (n, D) audio and text blocks. It scores its audio against the text block it
  holds (positives on the diagonal only for its own block, the first one), then passes the text block to the next
  device in the ring with `ppermute`, P - 1 times for P batch shards; the per-device sums are added with `psum` and
  divided by the global batch B.

  Backward (a custom VJP, so autodiff stores no per-step residuals): the text blocks go around the ring again,
  each travelling with an (n, D) accumulator of its own gradient; every device adds its block's contribution to the
  accumulator it holds, and one last rotation brings each accumulator home. Audio gradients stay local; temperature
  and bias gradients are psum-ed. Each device therefore holds at most one (n, n) block of logits and a few (n, D)
  blocks, in both passes, whatever P is. Forward-mode differentiation (jvp) is not supported.

  Args:
    audio_emb: (B, D) global array, sharded PartitionSpec(batch_axes, None).
    text_emb: (B, D) global array, sharded the same way.
    temperature: temperature value (python float or replicated scalar).
    bias: logit bias value (python float or replicated scalar).
    mesh: the device mesh. Axes not in `batch_axes` (e.g. 'tensor') see replicated embeddings.
    batch_axes: mesh axes the batch is sharded over; names absent from the mesh are skipped, so ('data', 'fsdp')
      also works on a mesh with only 'data'. Size-1 axes and a 1-device mesh are fine.
    valid: (B,) bool, False on padded rows, sharded like the embeddings; each text block travels with its mask.

  Returns:
    A float32 scalar, replicated.
  """
  axes = tuple(name for name in batch_axes if name in mesh.axis_names)
  num_shards = math.prod(mesh.shape[name] for name in axes)
  global_batch = audio_emb.shape[0]
  if global_batch % num_shards:
    raise ValueError(f"contrastive_sigmoid_chunked: global batch {global_batch} is not divisible by the "
                     f"{num_shards} shards of mesh axes {axes}")
  ring = [(shard, (shard + 1) % num_shards) for shard in range(num_shards)]
  pass_on = lambda block: jax.lax.ppermute(block, axes, ring)  # to the next device; receive the previous one's
  batch_spec, row_spec, replicated = PartitionSpec(axes, None), PartitionSpec(axes), PartitionSpec()

  def forward_per_device(audio_block, text_block, temperature, bias, valid_block):
    total = _sigmoid_block_loss(audio_block, text_block, temperature, bias, True, valid_block, valid_block)

    def negatives(_, carry):
      text_block, text_valid, total = carry
      text_block, text_valid = pass_on(text_block), pass_on(text_valid)  # (n, D), (n,)
      return text_block, text_valid, total + _sigmoid_block_loss(audio_block, text_block, temperature, bias, False,
                                                                 valid_block, text_valid)

    _, _, total = jax.lax.fori_loop(0, num_shards - 1, negatives, (text_block, valid_block, total))
    count = jnp.maximum(jax.lax.psum(jnp.sum(valid_block), axes), 1.0)
    return jax.lax.psum(total, axes) / count

  def backward_per_device(audio_block, text_block, temperature, bias, valid_block, cotangent):
    scale = cotangent / jnp.maximum(jax.lax.psum(jnp.sum(valid_block), axes), 1.0)
    d_audio, d_text, d_temperature, d_bias = _sigmoid_block_grads(audio_block, text_block, temperature, bias,
                                                                  True, scale, valid_block, valid_block)

    def negatives(_, carry):
      text_block, text_valid, d_text, d_audio, d_temperature, d_bias = carry
      # (n, D), (n,), (n, D): a block, its mask and its gradient so far
      text_block, text_valid, d_text = pass_on(text_block), pass_on(text_valid), pass_on(d_text)
      grads = _sigmoid_block_grads(audio_block, text_block, temperature, bias, False, scale, valid_block, text_valid)
      return (text_block, text_valid, d_text + grads[1], d_audio + grads[0], d_temperature + grads[2],
              d_bias + grads[3])

    carry = (text_block, valid_block, d_text, d_audio, d_temperature, d_bias)
    _, _, d_text, d_audio, d_temperature, d_bias = jax.lax.fori_loop(0, num_shards - 1, negatives, carry)
    d_text = pass_on(d_text)  # after P rotations in all, each text gradient is back on its owner
    return d_audio, d_text, jax.lax.psum(d_temperature, axes), jax.lax.psum(d_bias, axes)

  forward = jax.shard_map(forward_per_device, mesh=mesh,
                          in_specs=(batch_spec, batch_spec, replicated, replicated, row_spec), out_specs=replicated)
  backward = jax.shard_map(backward_per_device, mesh=mesh,
                           in_specs=(batch_spec, batch_spec, replicated, replicated, row_spec, replicated),
                           out_specs=(batch_spec, batch_spec, replicated, replicated))

  @jax.custom_vjp
  def ring_loss(audio_emb, text_emb, temperature, bias, valid):
    return forward(audio_emb, text_emb, temperature, bias, valid)

  def ring_loss_fwd(audio_emb, text_emb, temperature, bias, valid):
    return forward(audio_emb, text_emb, temperature, bias, valid), (audio_emb, text_emb, temperature, bias, valid)

  def ring_loss_bwd(residuals, cotangent):
    *inputs, valid = residuals
    return (*backward(*inputs, valid, cotangent), jnp.zeros_like(valid))

  ring_loss.defvjp(ring_loss_fwd, ring_loss_bwd)
  valid = jnp.ones((global_batch,), jnp.float32) if valid is None else _f32(valid)
  return ring_loss(_f32(audio_emb), _f32(text_emb), _f32(temperature), _f32(bias), valid)


def caption_xent(logits: jax.Array, targets: jax.Array, mask: jax.Array, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> jax.Array | tuple[jax.Array, jax.Array]:
  """Token cross-entropy of a caption decoder, with label smoothing, over the valid tokens of the whole batch.

  The target distribution is (1 - eps) * onehot + eps / V (eps spread uniformly over all V classes, the true one
  included, as in PyTorch and optax), so the per-token loss is (1 - eps) * NLL + eps * mean_v(-log p_v).

  The loss is a token-weighted mean: sum of per-token losses over every valid token of the batch divided by the
  number of valid tokens, not a mean of per-caption means. With reduction='sum_and_count' it returns the numerator
  and the denominator; summing both over micro-batches and dividing once gives exactly the full-batch loss (and
  gradient), which a mean of per-micro-batch means does not when micro-batches hold different token counts.

  Args:
    logits: (B, L, V) decoder logits (any float dtype; computed in float32).
    targets: (B, L) int target ids.
    mask: (B, L) bool, True on tokens that count (padding False). Masked positions contribute nothing.
    label_smoothing: eps in [0, 1); the study uses 0.1.
    reduction: 'mean' -> sum / max(count, 1); 'sum_and_count' -> (sum, count), both float32 scalars.
  """
  log_probs = jax.nn.log_softmax(_f32(logits), axis=-1)  # (B, L, V)
  target_log_prob = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]  # (B, L)
  per_token = -(1.0 - label_smoothing) * target_log_prob - label_smoothing * jnp.mean(log_probs, axis=-1)  # (B, L)
  valid = mask.astype(bool)
  total = jnp.sum(jnp.where(valid, per_token, 0.0))
  count = jnp.sum(valid, dtype=jnp.float32)
  if reduction == "mean":
    return total / jnp.maximum(count, 1.0)
  if reduction == "sum_and_count":
    return total, count
  raise ValueError(f"caption_xent: reduction must be 'mean' or 'sum_and_count', got {reduction!r}")


def sigmoid_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Elementwise binary cross-entropy with logits, numerically stable: max(x, 0) - x y + log(1 + exp(-|x|))."""
  logits, labels = _f32(logits), _f32(labels)
  return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def tagging_xent(logits: jax.Array, labels: jax.Array, weight: jax.Array, multilabel: bool = True,
                 reduction: str = "mean") -> jax.Array | tuple[jax.Array, jax.Array]:
  """Supervised tagging loss over the labelled clips of the batch.

  Multi-label (default): binary cross-entropy summed over the C classes (as AudioSet taggers do); single-label:
  softmax cross-entropy against the (one-hot) labels. The loss is a clip-weighted mean: the sum of per-clip losses
  times `weight` divided by the sum of `weight` (clips without the task's label weigh 0). With
  reduction='sum_and_count' it returns the numerator and the denominator, which add up exactly over micro-batches
  (as `caption_xent`).

  Args:
    logits: (B, C) class logits (any float dtype; computed in float32).
    labels: (B, C) multi-hot (or one-hot) targets.
    weight: (B,) 1 for clips that carry the task's label, 0 otherwise.
    multilabel: BCE per class (True) or softmax cross-entropy (False).
    reduction: 'mean' -> sum / max(count, 1); 'sum_and_count' -> (sum, count).
  """
  logits, labels, weight = _f32(logits), _f32(labels), _f32(weight)
  if multilabel:
    per_clip = jnp.sum(sigmoid_bce(logits, labels), axis=-1)  # (B,)
  else:
    per_clip = -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)  # (B,)
  total, count = jnp.sum(per_clip * weight), jnp.sum(weight)
  if reduction == "mean":
    return total / jnp.maximum(count, 1.0)
  if reduction == "sum_and_count":
    return total, count
  raise ValueError(f"tagging_xent: reduction must be 'mean' or 'sum_and_count', got {reduction!r}")


def embedding_regulariser(audio_emb: jax.Array, text_emb: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """The study toolkit's optional `embed_reg`: mean(|A|) / ||A||_F + mean(|T|) / ||T||_F.

  Computed on the global (gathered) (B, D) matrices. Each term is an L1/L2 ratio (divided by B D), a sparsity
  measure: adding it to the loss pushes the embeddings towards fewer, larger coordinates. valid: (B,) bool, False
  on padded rows, which are left out of both matrices (B then counts the valid rows).
  """
  weights = jnp.ones((audio_emb.shape[0],), jnp.float32) if valid is None else _f32(valid)  # (B,)

  def term(embeddings: jax.Array) -> jax.Array:
    embeddings = _f32(embeddings) * weights[:, None]  # (B, D), padded rows zeroed
    mean_abs = jnp.sum(jnp.abs(embeddings)) / (jnp.maximum(jnp.sum(weights), 1.0) * embeddings.shape[1])
    return mean_abs / jnp.sqrt(jnp.sum(jnp.square(embeddings)))
  return term(audio_emb) + term(text_emb)
