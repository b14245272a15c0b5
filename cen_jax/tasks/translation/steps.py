"""Pure train and eval steps of the translation GAN (official recipe, §8.4).

The state is one pytree with two named sub-states::

  {'step': int32 (),
   'generator': {'params', 'batch_stats'},
   'discriminator': {'params', 'batch_stats'},
   'opt_g': ..., 'opt_d': ...}

Batches: ``'inputs'`` ``(B, M, H, W, C)`` and ``'target'`` ``(B, H, W, 3)``
in [-1, 1], ``'valid'`` ``(B,)``, and for evaluation ``'index'`` ``(B,)``,
the example's position in the split (it seeds that example's dropout).

Multitask translation (a generator with ``heads``, ``Discriminators``):
``'target'`` is ``(B, T, H, W, 3)``, one image per target; every loss is the
sum over targets of the single-target loss of that target's M streams,
its ensemble and its critic, and the eval outputs gain a leading target
axis.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cen_jax.core import exchange
from cen_jax.core import sparsity
from cen_jax.tasks.translation import fid as fid_lib
from cen_jax.tasks.translation import losses
from cen_jax.tasks.translation import models

State = dict[str, Any]
NETWORKS = ('generator', 'discriminator')
PROTOCOLS = ('official', 'deterministic')
# Evaluation dropout is drawn from this key folded with the example index,
# so the official (dropout-on) protocol gives the same numbers for any
# batch size, sharding or process count.
EVAL_DROPOUT_SEED = 0


def is_encoder_norm_scale(path: tuple[str, ...]) -> bool:
  """The L1-penalised scales: every encoder InstanceNorm gamma of the
  generator, the unused conv1/conv8 ones included (as officially)."""
  return (path[0].startswith('conv') and len(path) == 3
          and path[1:] == ('norm', 'scale'))


def init_state(variables: Any, *, tx_g: optax.GradientTransformation,
               tx_d: optax.GradientTransformation) -> State:
  """The step-0 state around ``{'generator': ..., 'discriminator': ...}``."""
  return {
      'step': jnp.zeros((), jnp.int32),
      'generator': variables['generator'],
      'discriminator': variables['discriminator'],
      'opt_g': tx_g.init(variables['generator']['params']),
      'opt_d': tx_d.init(variables['discriminator']['params']),
  }


def _rngs(key: jax.Array) -> dict[str, jax.Array]:
  return {'dropout': key, 'exchange': jax.random.fold_in(key, 1)}


def targets_first(target: jnp.ndarray) -> jnp.ndarray:
  """A batch's ``'target'``: ``(B, H, W, 3)`` as is, ``(B, T, H, W, 3)``
  (multitask) as ``(T, B, H, W, 3)``."""
  return target if target.ndim == 4 else jnp.moveaxis(target, 1, 0)


def critic_loss(real: jnp.ndarray, fake: jnp.ndarray) -> jnp.ndarray:
  """``losses.discriminator_loss`` summed over the streams of every target.

  Args:
    real, fake: ``(M, B, h, w)`` logits, or ``(T, M, B, h, w)``.
  """
  def flat(logits):
    return logits.reshape((-1,) + logits.shape[-3:])
  return losses.discriminator_loss(flat(real), flat(fake))


def generator_terms(fake: jnp.ndarray, outputs: jnp.ndarray,
                    ensemble: jnp.ndarray, target: jnp.ndarray,
                    l1_weight: float) -> dict[str, jnp.ndarray]:
  """``losses.generator_losses``, summed over targets when there are some.

  Args:
    fake: ``(M, B, h, w)`` or ``(T, M, B, h, w)`` critic logits.
    outputs: ``(M, B, H, W, C)`` or ``(T, M, B, H, W, C)``.
    ensemble: ``(B, H, W, C)`` or ``(T, B, H, W, C)``.
    target: ``(B, H, W, C)`` or ``(T, B, H, W, C)``.
    l1_weight: the reconstruction weight.
  """
  if ensemble.ndim == 4:
    return losses.generator_losses(fake, outputs, ensemble, target,
                                   l1_weight)
  per_target = [losses.generator_losses(fake[t], outputs[t], ensemble[t],
                                        target[t], l1_weight)
                for t in range(ensemble.shape[0])]
  return {k: sum(terms[k] for terms in per_target) for k in per_target[0]}


def _discriminator_update(state, x, y, fake, *, discriminator, tx_d):
  """One Adam step of D on real pairs, then fake pairs (official order)."""
  d = state['discriminator']

  def loss_fn(params):
    real, s = discriminator.apply(
        {'params': params, 'batch_stats': d['batch_stats']}, x, y,
        train=True, mutable=['batch_stats'])
    fake_logits, s = discriminator.apply(
        {'params': params, 'batch_stats': s['batch_stats']}, x, fake,
        train=True, mutable=['batch_stats'])
    return critic_loss(real, fake_logits), s['batch_stats']

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      d['params'])
  updates, opt_d = tx_d.update(grads, state['opt_d'], d['params'])
  new = {'params': optax.apply_updates(d['params'], updates),
         'batch_stats': stats}
  return new, opt_d, loss


def train_step(state: State, batch: dict[str, jnp.ndarray], rng: jax.Array,
               *, generator: nn.Module, discriminator: nn.Module,
               tx_g: optax.GradientTransformation,
               tx_d: optax.GradientTransformation, l1_weight: float,
               slim_coef: float, modality_names: Sequence[str],
               total_steps: int) -> tuple[State, dict[str, jnp.ndarray]]:
  """One official step: a discriminator update, then a generator update on
  a fresh generator forward (new dropout) against the updated critic.

  Both generator forwards are in training mode (per-image InstanceNorm,
  dropout on) and move the running statistics, as the official ones do;
  the critic's move at each of its three calls. The L1 term on the
  encoder InstanceNorm scales is added to the generator's gradients by
  ``tx_g``; ``g_slim`` reports its value.

  Returns:
    The new state and the step's scalars: ``loss`` (the generator's total,
    as officially logged ``G_loss``), ``d_loss``, ``g_gan``, ``g_l1``,
    ``g_slim``, and per modality (per stream, ``modality_names`` naming
    the T x M streams of a multitask generator) ``alpha_<m>`` and
    ``exchanged_<m>``.
  """
  step = state['step']
  key = jax.random.fold_in(rng, step)
  key_d, key_g = jax.random.split(key)
  x = jnp.moveaxis(batch['inputs'], 1, 0)
  y = targets_first(batch['target'])
  progress = step.astype(jnp.float32) / total_steps
  g = state['generator']
  apply_g = functools.partial(
      generator.apply, train=True, dropout=True, step=step,
      progress=progress, mutable=['batch_stats'])

  out, g_stats = apply_g(g, x, rngs=_rngs(key_d))
  d_new, opt_d, d_loss = _discriminator_update(
      state, x, y, jax.lax.stop_gradient(out['outputs']),
      discriminator=discriminator, tx_d=tx_d)

  def g_loss_fn(params):
    out, stats = apply_g({'params': params, **g_stats}, x,
                         rngs=_rngs(key_g))
    fake, d_stats = discriminator.apply(
        d_new, x, out['outputs'], train=True, mutable=['batch_stats'])
    terms = generator_terms(fake, out['outputs'], out['ensemble'], y,
                            l1_weight)
    return terms['g_gan'] + terms['g_l1'], (terms, stats, d_stats, out)

  grads, (terms, g_stats, d_stats, out) = jax.grad(g_loss_fn, has_aux=True)(
      g['params'])
  updates, opt_g = tx_g.update(grads, state['opt_g'], g['params'])
  slim = slim_coef * sparsity.l1_value(g['params'], is_encoder_norm_scale)
  new_state = {
      'step': step + 1,
      'generator': {'params': optax.apply_updates(g['params'], updates),
                    'batch_stats': g_stats['batch_stats']},
      'discriminator': {'params': d_new['params'],
                        'batch_stats': d_stats['batch_stats']},
      'opt_g': opt_g,
      'opt_d': opt_d,
  }
  metrics = {'loss': terms['g_gan'] + terms['g_l1'] + slim,
             'd_loss': d_loss, 'g_gan': terms['g_gan'],
             'g_l1': terms['g_l1'], 'g_slim': slim}
  fractions = exchange.exchange_fractions(
      models.in_scales(g['params']), generator.exchange.weights,
      exchange.Context(train=True, step=step, progress=progress))
  overall = (jnp.mean(jnp.stack(list(fractions.values())), axis=0)
             if fractions else jnp.zeros(len(modality_names)))
  alpha = out['alpha'].reshape(-1)
  for m, name in enumerate(modality_names):
    metrics[f'alpha_{name}'] = alpha[m]
    metrics[f'exchanged_{name}'] = overall[m]
  return new_state, metrics


def _with_ensemble(out: dict[str, jnp.ndarray]) -> jnp.ndarray:
  """The outputs and then the ensemble, on the output axis: ``(M + 1, B,
  ...)``, or ``(T, M + 1, B, ...)`` for a multitask generator."""
  ensemble = out['ensemble']
  axis = ensemble.ndim - 4
  return jnp.concatenate(
      [out['outputs'], jnp.expand_dims(ensemble, axis)], axis=axis)


def translate(generator: nn.Module, variables: Any, x: jnp.ndarray,
              index: jnp.ndarray, protocol: str) -> jnp.ndarray:
  """``(M + 1, B, H, W, 3)``: the branch outputs, then the ensemble;
  ``(T, M + 1, B, H, W, 3)`` for a generator with T heads.

  ``'official'``: as the official evaluation runs the generator, in
  training mode (per-image InstanceNorm statistics, dropout on), each
  example with its own dropout key ``fold_in(EVAL_DROPOUT_SEED, index)``;
  ``'deterministic'``: running statistics, no dropout (PyTorch ``eval()``).

  Args:
    generator: the generator module.
    variables: its ``{'params', 'batch_stats'}``.
    x: ``(M, B, H, W, C)`` inputs.
    index: ``(B,)`` example positions in the split.
    protocol: one of ``PROTOCOLS``.
  """
  if protocol == 'deterministic':
    return _with_ensemble(
        generator.apply(variables, x, use_running_average=True))
  if protocol != 'official':
    raise ValueError(f'eval protocol {protocol!r}: choose one of {PROTOCOLS}')

  def one(xi, i):
    key = jax.random.fold_in(jax.random.key(EVAL_DROPOUT_SEED), i)
    images = _with_ensemble(generator.apply(
        variables, xi[:, None], dropout=True, rngs={'dropout': key}))
    return jnp.take(images, 0, axis=images.ndim - 4)

  # Per-image InstanceNorm makes examples independent: map over them.
  images = jax.vmap(one, in_axes=(1, 0))(x, index)
  return jnp.moveaxis(images, 0, -4)


def eval_step(variables: Any, batch: dict[str, jnp.ndarray],
              constants: dict[str, Any] | None = None, *,
              generator: nn.Module, protocol: str,
              inception: nn.Module | None = None) -> dict[str, Any]:
  """Error sums of every output and, for FID/KID, per-example features.

  Args:
    variables: ``{'generator': ..., 'discriminator': ...}``.
    batch: an eval batch.
    constants: ``{'inception': variables}`` of the FID Inception when
      ``inception`` is given (an argument, not constants of the program).
    generator: the generator module.
    protocol: one of ``PROTOCOLS``.
    inception: the FID Inception module, or None for no features.

  Returns:
    ``{'sums': {'l1': (M + 1,), 'mse': (M + 1,), 'count': ()}, 'rows':
    {...}, 'valid': (B,)}``: the sums of the per-image mean absolute and
    squared errors over valid examples; with ``inception``, ``rows``
    holds ``'real'`` ``(B, D)`` and ``'fake'`` ``(B, M + 1, D)``
    Inception features (the loop keeps the valid rows of the whole split).
    Multitask: ``(T, M + 1)`` sums, ``'real'`` ``(B, T, D)`` and
    ``'fake'`` ``(B, T, M + 1, D)``.
  """
  x = jnp.moveaxis(batch['inputs'], 1, 0)
  y = targets_first(batch['target'])
  images = translate(generator, variables['generator'], x, batch['index'],
                     protocol)
  # The target against every output of its own.
  l1, mse = losses.per_image_errors(images, jnp.expand_dims(y, y.ndim - 4))
  valid = batch['valid'].astype(jnp.float32)
  sums = {'l1': jnp.sum(l1 * valid, axis=-1),
          'mse': jnp.sum(mse * valid, axis=-1),
          'count': jnp.sum(valid)}
  rows = {}
  if inception is not None:
    features = functools.partial(fid_lib.features_of_outputs, inception,
                                 constants['inception'])

    def batch_first(images):  # (..., B, H, W, 3) -> (B, ..., D)
      lead = images.shape[:-3]
      f = features(images.reshape((-1,) + images.shape[-3:]))
      return jnp.moveaxis(f.reshape(lead + f.shape[-1:]), -2, 0)
    rows['real'] = batch_first(y)
    rows['fake'] = batch_first(images)
  return {'sums': sums, 'rows': rows, 'valid': batch['valid']}
