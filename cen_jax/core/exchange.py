"""Channel-exchange variants as pure functions over the modality axis.

An exchange maps the post-norm activations of one exchange site, stacked
over the modality axis, to exchanged activations::

  exchange(x: (M, B, H, W, C), scale: (M, C), *, site: str,
           ctx: Context | None) -> (M, B, H, W, C)

``scale`` is the per-modality norm scale (gamma) of that site, ``site`` a
stable name of the site (``'layer1.0'``) for variants that need a per-site
constant, and ``ctx`` what else a variant may read: whether the model
trains, the training step and progress, and a random key unique to the step
and the site (:class:`Context`).

A variant is a **rule** of one of three kinds (:class:`Rule`):

* ``'mask'``: ``rule(scale, *, site, ctx) -> (M, C) bool``. Where
  ``mask[m, c]`` is set, channel ``c`` of modality ``m`` is replaced by the
  mean of that channel over the other ``M - 1`` modalities (for ``M = 2``
  exactly the other modality, so the official swap is reproduced bit for
  bit). ``jnp.where`` sends no gradient to the branch it discards, so a
  replaced channel gives its own modality (and its gamma and beta) no task
  gradient, and the mask, a comparison, carries none either: the official
  routing. Gamma still receives the L1 subgradient from the optimiser.
* ``'soft'``: ``rule(scale, *, site, ctx) -> (M, C)`` weights ``w`` in
  ``[0, 1]``; ``x_m <- (1 - w_m) x_m + w_m mean_others``. Gradients flow
  where the rule's arithmetic sends them, to the scales too.
* ``'function'``: ``rule(x, scale, *, site, ctx) -> x``, anything at all,
  with a ``weights`` rule of the ``'soft'`` signature that says how much of
  each channel is exchanged (for the logged fractions and the plots).

A plain function given where a rule is expected is a ``'mask'`` rule, so
the simplest variant is one function. The built-in rules are the explicit
dict :data:`RULES`; a user's own rule is selected by its import path,
``'my_pkg.my_module:my_rule'`` (see :func:`get`), without editing this
library. Hyperparameters (``config.model.exchange_kwargs``) are bound to the
rule as keyword arguments.

At evaluation and inference a rule sees ``ctx.train = False`` and no step,
progress or key (``ctx`` may also be ``None`` when a model is called
directly): every rule defines its evaluation behaviour from the scales and
its hyperparameters alone (the annealed threshold evaluates at its final
value, the per-step random exchange with the fixed draw of ``'random'``).

:func:`get` returns an :class:`Exchange`, the configured variant a model
carries (``model.exchange``): training metrics, analysis plots and the
model all read that one object.
"""

import dataclasses
import functools
import importlib
import inspect
import zlib
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

MaskFn = Callable[..., jnp.ndarray]
KINDS = ('mask', 'soft', 'function')
# The |gamma| level marked on plots for variants without a threshold: the
# official CEN threshold, for reference.
REFERENCE_THRESHOLD = 2e-2


@dataclasses.dataclass(frozen=True)
class Context:
  """What an exchange rule may read besides the activations and scales.

  Attributes:
    train: whether the model runs a training step.
    step: int32 scalar, completed optimiser updates before this step
      (training only, else None).
    progress: float32 scalar in ``[0, 1)``, ``step / total_steps``
      (training only, else None).
    rng: a typed key unique to this step and this site, for rules created
      with ``needs_rng=True`` in training; None otherwise. Derived from the
      run's seed and the step, so a resumed run draws the same keys.
  """
  train: bool = False
  step: Any = None
  progress: Any = None
  rng: Any = None


# A pytree (``train`` static), so lifted transforms such as ``nn.remat`` can
# take a Context as an argument.
jax.tree_util.register_dataclass(
    Context, data_fields=['step', 'progress', 'rng'], meta_fields=['train'])


@dataclasses.dataclass(frozen=True)
class Rule:
  """An exchange rule and how to apply it.

  Attributes:
    kind: ``'mask'``, ``'soft'`` or ``'function'`` (see the module
      docstring).
    fn: the rule.
    weights: for ``'function'`` rules: ``weights(scale, *, site, ctx) ->
      (M, C)`` in ``[0, 1]``, the exchanged share of every channel.
    needs_rng: whether the rule reads ``ctx.rng`` in training (the model
      then draws a key per step and site from its ``'exchange'`` stream).
  """
  kind: str
  fn: Callable[..., jnp.ndarray]
  weights: Callable[..., jnp.ndarray] | None = None
  needs_rng: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'exchange rule kind {self.kind!r}: choose one of '
                       f'{KINDS}')
    if self.kind == 'function' and self.weights is None:
      raise ValueError("a 'function' exchange rule needs weights=: the "
                       'exchanged share of each channel, for metrics')


def mask(fn: Callable[..., jnp.ndarray], *, needs_rng: bool = False) -> Rule:
  """A hard rule: ``fn(scale, *, site, ctx) -> (M, C) bool``."""
  return Rule('mask', fn, needs_rng=needs_rng)


def soft(fn: Callable[..., jnp.ndarray], *, needs_rng: bool = False) -> Rule:
  """A soft rule: ``fn(scale, *, site, ctx) -> (M, C)`` weights in [0, 1]."""
  return Rule('soft', fn, needs_rng=needs_rng)


def function(fn: Callable[..., jnp.ndarray],
             weights: Callable[..., jnp.ndarray], *,
             needs_rng: bool = False) -> Rule:
  """A full exchange ``fn(x, scale, *, site, ctx) -> x`` with its weights."""
  return Rule('function', fn, weights=weights, needs_rng=needs_rng)


class ExchangeFn(Protocol):

  def __call__(self, x: jnp.ndarray, scale: jnp.ndarray, *, site: str,
               ctx: Context | None = None) -> jnp.ndarray:
    ...


def mean_of_others(x: jnp.ndarray) -> jnp.ndarray:
  """For each m, the mean over the other modalities; ``(M, ...)`` in and out.

  Built from explicit slices rather than ``(sum - x[m]) / (M - 1)`` so that
  for ``M = 2`` the result is the other modality bit for bit.
  """
  num = x.shape[0]
  if num == 1:
    return x
  others = [jnp.concatenate([x[:m], x[m + 1:]], axis=0) for m in range(num)]
  return jnp.stack([jnp.mean(o, axis=0) for o in others], axis=0)


def _per_channel(values: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """``(M, C)`` reshaped to broadcast against ``(M, ..., C)``."""
  return values.reshape(values.shape[:1] + (1,) * (x.ndim - 2)
                        + values.shape[1:])


def masked_exchange(x: jnp.ndarray, mask_: jnp.ndarray) -> jnp.ndarray:
  """Replaces channels where ``mask_`` is set by the mean of the others.

  Args:
    x: ``(M, B, H, W, C)`` activations (any rank >= 2 with M first, C last).
    mask_: ``(M, C)`` bool, True where modality m's channel c is replaced.

  Returns:
    Array of the shape and dtype of ``x``.
  """
  if x.shape[0] == 1:
    return x
  return jnp.where(_per_channel(mask_, x), mean_of_others(x), x)


def soft_exchange(x: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """``x_m + w_m (mean_others - x_m)``: ``w = 1`` is the hard exchange.

  Args:
    x: ``(M, B, H, W, C)`` activations.
    weights: ``(M, C)`` in ``[0, 1]``.

  Returns:
    Array of the shape and dtype of ``x``.
  """
  if x.shape[0] == 1:
    return x
  w = _per_channel(weights, x).astype(x.dtype)
  return x + w * (mean_of_others(x) - x)


# The built-in rules. ``ctx`` is None when a model is called directly.


def none_mask(scale: jnp.ndarray, *, site: str,
              ctx: Context | None = None) -> jnp.ndarray:
  """No exchange: the ablation without fusion inside the encoder."""
  del site, ctx
  return jnp.zeros(scale.shape, bool)


def bn_threshold_mask(scale: jnp.ndarray, *, site: str,
                      ctx: Context | None = None,
                      threshold: float = 2e-2) -> jnp.ndarray:
  """CEN: exchange where ``|gamma_m[c]| < threshold``, over all channels.

  The official test is on the absolute value and covers every channel, not
  only the slice that the L1 penalty targets (reference §2.3).
  """
  del site, ctx
  return jnp.abs(scale) < threshold


def random_mask(scale: jnp.ndarray, *, site: str,
                ctx: Context | None = None, ratio: float = 0.1,
                seed: int = 0) -> jnp.ndarray:
  """The paper's random-exchange ablation: a fixed random subset.

  Each layer (``site``) and modality exchanges a fixed set of
  ``round(ratio * C)`` channels drawn from ``seed`` and the site's name, so
  the subset is constant over training and differs between layers.
  """
  del ctx
  num_modalities, channels = scale.shape
  count = int(round(ratio * channels))
  rng = np.random.default_rng([seed, zlib.crc32(site.encode())])
  out = np.zeros((num_modalities, channels), bool)
  for m in range(num_modalities):
    out[m, rng.choice(channels, count, replace=False)] = True
  return jnp.asarray(out)


def random_per_step_mask(scale: jnp.ndarray, *, site: str,
                         ctx: Context | None = None, ratio: float = 0.1,
                         seed: int = 0) -> jnp.ndarray:
  """The random ablation redrawn at every training step.

  In training, each modality exchanges ``round(ratio * C)`` channels drawn
  from ``ctx.rng`` (new every step and site); at evaluation, the fixed
  subset of :func:`random_mask` with the same ``ratio`` and ``seed``.
  """
  if ctx is None or ctx.rng is None:
    return random_mask(scale, site=site, ratio=ratio, seed=seed)
  num_modalities, channels = scale.shape
  count = int(round(ratio * channels))

  def one(key):
    chosen = jax.random.permutation(key, channels)[:count]
    return jnp.zeros((channels,), bool).at[chosen].set(True)

  return jax.vmap(one)(jax.random.split(ctx.rng, num_modalities))


def annealed_threshold_mask(scale: jnp.ndarray, *, site: str,
                            ctx: Context | None = None, start: float = 0.0,
                            threshold: float = 2e-2) -> jnp.ndarray:
  """CEN's rule with a threshold that grows linearly over training.

  ``|gamma| < start + (threshold - start) * progress`` in training (nothing
  is exchanged at step 0 with the default ``start = 0``), and the final
  ``threshold`` at evaluation.
  """
  del site
  if ctx is None or ctx.progress is None:
    level = threshold
  else:
    level = start + (threshold - start) * ctx.progress
  return jnp.abs(scale) < level


def soft_threshold_weights(scale: jnp.ndarray, *, site: str,
                           ctx: Context | None = None,
                           threshold: float = 2e-2,
                           temperature: float = 5e-3) -> jnp.ndarray:
  """A differentiable CEN: ``w = sigmoid((threshold - |gamma|) / T)``.

  ``|gamma| = threshold`` mixes half and half; far below it the channel is
  replaced, far above it kept. The weights, and so the task loss, depend
  smoothly on gamma: the scales receive task gradient through the exchange
  (unlike the hard rule).
  """
  del site, ctx
  return jax.nn.sigmoid((threshold - jnp.abs(scale)) / temperature)


RULES: dict[str, Rule] = {
    'none': mask(none_mask),
    'bn_threshold': mask(bn_threshold_mask),
    'random': mask(random_mask),
    'random_per_step': mask(random_per_step_mask, needs_rng=True),
    'annealed_threshold': mask(annealed_threshold_mask),
    'soft_threshold': soft(soft_threshold_weights),
}


def load_rule(name: str) -> Rule:
  """A built-in rule by name, or a user's rule by ``'module:attribute'``.

  The attribute may be a :class:`Rule` or a plain function (a ``'mask'``
  rule).

  Raises:
    ValueError: an unknown name, a module that does not import (the message
      says why), or a missing or unusable attribute; every message lists
      the built-in rules.
  """
  builtins = sorted(RULES)
  if name in RULES:
    return RULES[name]
  if ':' not in name:
    raise ValueError(
        f'Unknown exchange {name!r}; choose one of {builtins}, or give your '
        "own rule as 'package.module:rule'.")
  module_name, _, attribute = name.partition(':')
  try:
    module = importlib.import_module(module_name)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'Exchange {name!r}: cannot import module {module_name!r} '
        f'({type(e).__name__}: {e}); built-in rules: {builtins}') from e
  if not hasattr(module, attribute):
    raise ValueError(
        f'Exchange {name!r}: module {module_name!r} ({module.__file__}) has '
        f'no attribute {attribute!r}; built-in rules: {builtins}')
  rule = getattr(module, attribute)
  if isinstance(rule, Rule):
    return rule
  if callable(rule):
    return mask(rule)
  raise ValueError(f'Exchange {name!r}: {type(rule).__name__} is neither a '
                   f'Rule nor a function; built-in rules: {builtins}')


def get_mask_fn(name: str, **kwargs) -> MaskFn:
  """The rule of a ``'mask'`` variant with its hyperparameters bound."""
  rule = load_rule(name)
  if rule.kind != 'mask':
    raise ValueError(f'exchange {name!r} is a {rule.kind!r} rule, not a mask')
  return functools.partial(rule.fn, **kwargs)


def _threshold(fn: Callable[..., Any], kwargs: dict[str, Any]) -> float:
  if 'threshold' in kwargs:
    return float(kwargs['threshold'])
  try:
    param = inspect.signature(fn).parameters.get('threshold')
  except (TypeError, ValueError):
    param = None
  if param is None or param.default is inspect.Parameter.empty:
    return REFERENCE_THRESHOLD
  return float(param.default)


@dataclasses.dataclass(frozen=True)
class Exchange:
  """One configured exchange variant; call it as ``fn(x, scale, site=...)``.

  Attributes:
    name: the variant's name in ``RULES`` or its import path.
    rule: the rule.
    kwargs: its hyperparameters, as sorted ``(name, value)`` pairs.
    threshold: the |gamma| threshold of the variant (its ``threshold``
      hyperparameter, bound or default), or ``REFERENCE_THRESHOLD`` for
      variants without one; what analysis plots mark.
  """
  name: str
  rule: Rule
  kwargs: tuple[tuple[str, Any], ...] = ()
  threshold: float = REFERENCE_THRESHOLD

  @property
  def needs_rng(self) -> bool:
    return self.rule.needs_rng

  @property
  def mask_fn(self) -> MaskFn:
    """The bound rule of a ``'mask'`` variant."""
    if self.rule.kind != 'mask':
      raise ValueError(f'exchange {self.name!r} is a {self.rule.kind!r} rule')
    return functools.partial(self.rule.fn, **dict(self.kwargs))

  def weights(self, scale: jnp.ndarray, *, site: str,
              ctx: Context | None = None) -> jnp.ndarray:
    """``(M, C)`` float32: the exchanged share of every channel (0 or 1 for
    masks)."""
    kw = dict(self.kwargs)
    fn = self.rule.weights if self.rule.kind == 'function' else self.rule.fn
    return jnp.asarray(fn(scale, site=site, ctx=ctx, **kw), jnp.float32)

  def __call__(self, x: jnp.ndarray, scale: jnp.ndarray, *, site: str,
               ctx: Context | None = None) -> jnp.ndarray:
    if self.rule.fn is none_mask:  # Skip the where entirely: same result.
      return x
    kw = dict(self.kwargs)
    if self.rule.kind == 'mask':
      return masked_exchange(x, self.rule.fn(scale, site=site, ctx=ctx, **kw))
    if self.rule.kind == 'soft':
      return soft_exchange(x, self.rule.fn(scale, site=site, ctx=ctx, **kw))
    return self.rule.fn(x, scale, site=site, ctx=ctx, **kw)


def get(name: str, **kwargs) -> Exchange:
  """The exchange variant ``name`` with hyperparameters bound.

  Args:
    name: a key of ``RULES`` (``'none'``, ``'bn_threshold'``, ``'random'``,
      ``'random_per_step'``, ``'annealed_threshold'``,
      ``'soft_threshold'``) or a user's rule as ``'package.module:rule'``.
    **kwargs: the rule's hyperparameters (e.g. ``threshold``; ``ratio``,
      ``seed``).

  Returns:
    An :class:`Exchange`, ``fn(x, scale, *, site, ctx=None) -> x``.
  """
  rule = load_rule(name)
  fn = rule.weights if rule.kind == 'function' else rule.fn
  _check_kwargs(name, rule.fn, kwargs)
  return Exchange(name, rule, tuple(sorted(kwargs.items())),
                  _threshold(fn, kwargs))


def _check_kwargs(name: str, fn: Callable[..., Any],
                  kwargs: dict[str, Any]) -> None:
  """Unknown hyperparameters fail here, by name, not deep inside a trace."""
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return
  accepted = [k for k, p in params.items() if p.kind == p.KEYWORD_ONLY
              and k not in ('site', 'ctx')]
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(
        f'exchange {name!r} takes the hyperparameters {accepted} '
        f'(config.model.exchange_kwargs), not {unknown}')


def exchange_fractions(scales: dict[str, jnp.ndarray],
                       weights_fn: Callable[..., jnp.ndarray],
                       ctx: Context | None = None
                       ) -> dict[str, jnp.ndarray]:
  """Exchanged share of the channels per site and modality.

  Args:
    scales: ``{site: (M, C) scale}``, e.g. from
      ``segmentation.models.bn2_scales(params)``.
    weights_fn: a mask rule (``get_mask_fn``) or ``Exchange.weights``.
    ctx: passed to the rule (the training step's context).

  Returns:
    ``{site: (M,) float32}``.
  """
  kw = {} if ctx is None else {'ctx': ctx}
  return {
      site: jnp.mean(jnp.asarray(weights_fn(s, site=site, **kw),
                                 jnp.float32), axis=-1)
      for site, s in scales.items()
  }
