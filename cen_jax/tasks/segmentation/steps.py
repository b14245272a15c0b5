"""Pure train and eval steps; collaborators are bound with ``partial``.

The training state is a plain dict pytree::

  {'step': int32 (), 'params': ..., 'batch_stats': ..., 'opt_state': ...}

Batches are dicts from the input pipeline: ``'inputs'`` ``(B, M, H, W, 3)``,
``'label'`` ``(B, H, W)`` (255 = ignore) and ``'valid'`` ``(B,)``. The steps
move the modality axis to the front, where the model wants it.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cen_jax.core import exchange
from cen_jax.core import resize
from cen_jax.tasks.segmentation import losses
from cen_jax.tasks.segmentation import metrics
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation import optim

State = dict[str, Any]


def init_state(variables: Any, *, tx: optax.GradientTransformation) -> State:
  """The step-0 state around ``variables`` (``params``, ``batch_stats``)."""
  params = variables['params']
  return {
      'step': jnp.zeros((), jnp.int32),
      'params': params,
      'batch_stats': variables.get('batch_stats', {}),
      'opt_state': tx.init(params),
  }


def _modality_major(inputs: jnp.ndarray) -> jnp.ndarray:
  return jnp.moveaxis(inputs, 1, 0)


def train_step(state: State, batch: dict[str, jnp.ndarray], rng: jax.Array,
               *, model: nn.Module, tx: optax.GradientTransformation,
               l1_coef: float, l1_scope: str,
               lr_fns: dict[str, Callable[[Any], Any]],
               modality_names: Sequence[str], total_steps: int
               ) -> tuple[State, dict[str, jnp.ndarray]]:
  """One optimiser step on the official loss.

  The loss is the sum of the cross-entropies of every modality output and of
  the ensemble; the L1 subgradient on the bn2 scales is added by ``tx``. The
  reported ``loss`` adds ``l1_coef * L1`` so that it equals the official
  total. The exchange rule sees the step, ``progress = step /
  total_steps`` and, if it asks, a key per step and site; the exchanged
  fractions are ``model.exchange.weights`` under the same context.

  Returns:
    The new state and this step's scalars: ``loss``, ``ce_total``,
    ``ce_ensemble``, ``l1``, ``lr_<group>``, and per modality ``ce_<m>``,
    ``alpha_<m>``, ``exchanged_<m>`` (all bn2 sites) and
    ``exchanged_<m>_layer<s>`` (the blocks of stage s).
  """
  rng = jax.random.fold_in(rng, state['step'])
  x = _modality_major(batch['inputs'])
  step = state['step']
  progress = step.astype(jnp.float32) / total_steps
  # Dropout keeps the step's key itself, as before exchange had a stream.
  rngs = {'dropout': rng, 'exchange': jax.random.fold_in(rng, 1)}

  def loss_fn(params):
    out, mutated = model.apply(
        {'params': params, 'batch_stats': state['batch_stats']}, x,
        train=True, step=step, progress=progress, mutable=['batch_stats'],
        rngs=rngs)
    ce = losses.segmentation_losses(out, batch['label'])
    return ce['ce_total'], (ce, out['alpha'], mutated['batch_stats'])

  grads, (ce, alpha, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  l1 = optim.l1_value(state['params'], l1_scope)
  fractions = exchange.exchange_fractions(
      models.bn2_scales(state['params']), model.exchange.weights,
      exchange.Context(train=True, step=step, progress=progress))
  new_state = {
      'step': state['step'] + 1,
      'params': optax.apply_updates(state['params'], updates),
      'batch_stats': batch_stats,
      'opt_state': opt_state,
  }
  step_metrics = {
      'loss': ce['ce_total'] + l1_coef * l1,
      'ce_total': ce['ce_total'],
      'ce_ensemble': ce['ce_ensemble'],
      'l1': l1,
      **{f'lr_{name}': fn(state['step']) for name, fn in lr_fns.items()},
  }
  overall = jnp.mean(jnp.stack(list(fractions.values())), axis=0)
  per_stage = per_stage_fractions(fractions)
  for m, name in enumerate(modality_names):
    step_metrics[f'ce_{name}'] = ce['ce_modality'][m]
    step_metrics[f'alpha_{name}'] = alpha[m]
    step_metrics[f'exchanged_{name}'] = overall[m]
    for stage, frac in enumerate(per_stage[:, m]):
      step_metrics[f'exchanged_{name}_layer{stage + 1}'] = frac
  return new_state, step_metrics


def per_stage_fractions(fractions: dict[str, jnp.ndarray]) -> jnp.ndarray:
  """``(4, M)``: mean exchanged fraction of the blocks of each stage."""
  stages = {}
  for site, frac in fractions.items():
    stages.setdefault(site.split('.')[0], []).append(frac)
  return jnp.stack([jnp.mean(jnp.stack(stages[k]), axis=0)
                    for k in sorted(stages)])


def full_res_logits(model: nn.Module, variables: Any,
                    x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """``(M + 1, B, H, W, K)`` logits of every output, official protocol.

  Single scale: the model at the input's size, logits resized to the label
  size with OpenCV's bicubic (reference §6).
  """
  out = model.apply(variables, x, train=False)
  logits = jnp.concatenate([out['modality_logits'],
                            out['ensemble_logits'][None]])
  return resize.resize_bicubic_cv2(logits, size)


def eval_step(variables: Any, batch: dict[str, jnp.ndarray], *,
              model: nn.Module, num_classes: int,
              logits_fn: Callable[..., jnp.ndarray] = full_res_logits
              ) -> jnp.ndarray:
  """Confusion matrices ``(M + 1, K, K)`` of every output on one batch.

  ``variables`` are ``{'params', 'batch_stats'}``.
  ``logits_fn(model, variables, x, size) -> (M + 1, B, H, W, K)`` decides
  the protocol (single scale by default; multi-scale and flip from
  ``inference.model_logits_fn``).
  """
  x = _modality_major(batch['inputs'])
  logits = logits_fn(model, variables, x, batch['label'].shape[1:3])
  preds = jnp.argmax(logits, axis=-1)
  return jnp.stack([
      metrics.confusion_matrix(batch['label'], p, num_classes,
                               valid=batch['valid'])
      for p in preds
  ])
