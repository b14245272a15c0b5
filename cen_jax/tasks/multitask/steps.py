"""Pure train and eval steps of the multitask stream core.

Batches come from ``multitask.input_pipeline``: ``'inputs'`` ``(B, M, H, W,
3)`` (one slot per input modality), ``'label'`` ``(B, H, W)`` int (255 =
ignore), ``'depth'`` ``(B, H, W)`` metres (0 = missing), ``'normal'`` ``(B,
H, W, 3)`` (all-zero = missing) and ``'valid'`` ``(B,)``. The steps gather
each stream's input into the stream-major ``(S, B, H, W, 3)`` the model
(``core.StreamCore``) takes.

Every head's output (1/4 resolution) is resized bilinearly
(``align_corners=False``) to the target size, for the losses and for the
metrics alike; this project's choice, the one MTAN makes for all three
tasks. A task's loss is the sum over its streams and its ensemble, as
CEN's segmentation loss is; the total is the weighted sum over tasks.
"""

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cen_jax.core import exchange
from cen_jax.core import resize
from cen_jax.tasks.multitask import losses
from cen_jax.tasks.multitask import metrics
from cen_jax.tasks.segmentation import losses as seg_losses
from cen_jax.tasks.segmentation import metrics as seg_metrics
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation import optim
from cen_jax.tasks.segmentation import steps as seg_steps

State = dict[str, Any]
init_state = seg_steps.init_state
Batch = dict[str, jnp.ndarray]


def stream_inputs(inputs: jnp.ndarray,
                  input_index: Sequence[int]) -> jnp.ndarray:
  """``(B, M, H, W, 3)`` batch inputs -> ``(S, B, H, W, 3)`` per stream.

  A stream with index -1 (a predicted input) gets zeros, which the core
  replaces.
  """
  x = jnp.moveaxis(inputs, 1, 0)
  if min(input_index) >= 0:
    return x[np.asarray(input_index)]
  return jnp.stack([x[i] if i >= 0 else jnp.zeros_like(x[0])
                    for i in input_index])


def to_target_size(output: jnp.ndarray, size: tuple[int, int]
                   ) -> jnp.ndarray:
  """A head's ``(..., h, w, C)`` output, bilinear to ``size``."""
  return resize.resize_bilinear(output.astype(jnp.float32), size,
                                align_corners=False)


def task_loss(kind: str, output: jnp.ndarray, batch: Batch) -> jnp.ndarray:
  """The loss of one ``(B, h, w, C)`` output of a ``kind`` task."""
  if kind == 'semseg':
    return seg_losses.cross_entropy(output, batch['label'])
  size = batch['label'].shape[1:3]
  pred = to_target_size(output, size)
  if kind == 'depth':
    return losses.depth_l1(pred[..., 0], batch['depth'])
  if kind == 'normals':
    return losses.normal_cosine(pred, batch['normal'])
  raise ValueError(f'unknown task kind {kind!r}')


def task_losses(out: Mapping[str, Any], batch: Batch,
                kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
  """``{task: {'streams': (S_t,), 'ensemble': (), 'total': ()}}``."""
  result = {}
  with jax.named_scope('loss'):
    for task, kind in kinds.items():
      per_stream = jnp.stack([task_loss(kind, o, batch)
                              for o in out['streams'][task]])
      ens = task_loss(kind, out['ensemble'][task], batch)
      result[task] = {'streams': per_stream, 'ensemble': ens,
                      'total': jnp.sum(per_stream) + ens}
  return result


def train_step(state: State, batch: Batch, rng: jax.Array, *,
               model: Any, tx: optax.GradientTransformation,
               l1_coef: float, l1_scope: str,
               l1_groups: Sequence[Sequence[int]] | None,
               lr_fns: dict[str, Callable[[Any], Any]],
               input_index: Sequence[int], stream_names: Sequence[str],
               stream_tasks: Sequence[str], kinds: Mapping[str, str],
               loss_weights: Mapping[str, float], total_steps: int
               ) -> tuple[State, dict[str, jnp.ndarray]]:
  """One optimiser step on ``sum_t w_t (sum of t's streams + ensemble)``.

  The L1 subgradient on the bn2 scales (disjoint slices per pass of the
  core, ``l1_groups``) is added by ``tx``; the reported ``loss`` adds
  ``l1_coef * L1``.

  Returns:
    The new state and this step's scalars: ``loss``, ``task_loss`` (the
    weighted sum), ``l1``, ``lr_<group>``, per task ``loss_<task>`` (its
    streams + ensemble) and ``loss_<task>_ensemble``, per stream
    ``loss_<stream>``, ``alpha_<stream>`` and ``exchanged_<stream>``.
  """
  rng = jax.random.fold_in(rng, state['step'])
  x = stream_inputs(batch['inputs'], input_index)
  step = state['step']
  progress = step.astype(jnp.float32) / total_steps
  rngs = {'dropout': rng, 'exchange': jax.random.fold_in(rng, 1)}

  def loss_fn(params):
    out, mutated = model.apply(
        {'params': params, 'batch_stats': state['batch_stats']}, x,
        train=True, step=step, progress=progress, mutable=['batch_stats'],
        rngs=rngs)
    per_task = task_losses(out, batch, kinds)
    total = sum(loss_weights[t] * per_task[t]['total'] for t in kinds)
    return total, (per_task, out['alpha'], mutated['batch_stats'])

  (weighted, (per_task, alpha, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  l1 = optim.l1_value(state['params'], l1_scope, l1_groups)
  fractions = exchange.exchange_fractions(
      models.bn2_scales(state['params']), model.exchange.weights,
      exchange.Context(train=True, step=step, progress=progress))
  new_state = {
      'step': step + 1,
      'params': optax.apply_updates(state['params'], updates),
      'batch_stats': batch_stats,
      'opt_state': opt_state,
  }
  step_metrics = {
      'loss': weighted + l1_coef * l1,
      'task_loss': weighted,
      'l1': l1,
      **{f'lr_{name}': fn(step) for name, fn in lr_fns.items()},
  }
  for task in kinds:
    step_metrics[f'loss_{task}'] = per_task[task]['total']
    step_metrics[f'loss_{task}_ensemble'] = per_task[task]['ensemble']
  overall = jnp.mean(jnp.stack(list(fractions.values())), axis=0)
  per_stage = seg_steps.per_stage_fractions(fractions)
  seen = dict.fromkeys(kinds, 0)
  for s, (name, task) in enumerate(zip(stream_names, stream_tasks)):
    k = seen[task]
    seen[task] += 1
    step_metrics[f'loss_{name}'] = per_task[task]['streams'][k]
    step_metrics[f'alpha_{name}'] = alpha[task][k]
    step_metrics[f'exchanged_{name}'] = overall[s]
    for stage, frac in enumerate(per_stage[:, s]):
      step_metrics[f'exchanged_{name}_layer{stage + 1}'] = frac
  return new_state, step_metrics


def predictions(model: Any, variables: Any, x: jnp.ndarray,
                size: tuple[int, int]) -> dict[str, jnp.ndarray]:
  """``{task: (S_t + 1, B, H, W, C)}``: every stream, then the ensemble.

  At ``size``, bilinear (``align_corners=False``); raw head outputs
  (semseg logits, depth in metres, unnormalised normals).
  """
  out = model.apply(variables, x, train=False)
  return {task: to_target_size(
      jnp.concatenate([out['streams'][task],
                       out['ensemble'][task][None]]), size)
          for task in out['streams']}


def eval_sums(kind: str, pred: jnp.ndarray, batch: Batch,
              num_classes: int) -> Any:
  """Per-batch sums of one ``(B, H, W, C)`` output at the target size."""
  if kind == 'semseg':
    return seg_metrics.confusion_matrix(
        batch['label'], jnp.argmax(pred, axis=-1), num_classes,
        valid=batch['valid'])
  valid = batch['valid'].reshape((-1,) + (1,) * (pred.ndim - 2))
  if kind == 'depth':
    return metrics.depth_sums(pred[..., 0],
                              jnp.where(valid, batch['depth'], 0.0))
  if kind == 'normals':
    return metrics.normal_sums(
        pred, jnp.where(valid[..., None], batch['normal'], 0.0))
  raise ValueError(f'unknown task kind {kind!r}')


def eval_step(variables: Any, batch: Batch, *, model: Any,
              input_index: Sequence[int], kinds: Mapping[str, str],
              output_names: Mapping[str, Sequence[str]],
              num_classes: int) -> dict[str, dict[str, Any]]:
  """``{task: {output: sums}}`` for every stream of a task and its ensemble.

  ``output_names[task]`` names the task's streams, then ``'ensemble'``.
  Padding examples (``valid`` False) count nowhere.
  """
  x = stream_inputs(batch['inputs'], input_index)
  preds = predictions(model, variables, x, batch['label'].shape[1:3])
  return {task: {name: eval_sums(kind, p, batch, num_classes)
                 for name, p in zip(output_names[task], preds[task])}
          for task, kind in kinds.items()}
