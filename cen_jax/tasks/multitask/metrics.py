"""Metrics of depth estimation and surface normals, and the gain Delta_m.

Evaluation is streaming: a jitted step returns per-batch *sums*
(``depth_sums``, ``normal_sums``), the host adds them up in float64 and
``depth_metrics`` / ``normal_metrics`` turn the totals into metrics, so the
result does not depend on the batch size or the number of devices.

Depth (on pixels with ``target > 0``): ``abs_err`` mean |p - t| (MTAN's
"abs err"), ``abs_rel`` mean |p - t| / t, ``rmse`` sqrt(mean (p - t)^2),
``delta1`` share of pixels with max(p / t, t / p) < 1.25 (a non-positive
prediction never counts).

Normals (on pixels whose target is not all-zero; both vectors normalised):
``mean_angle`` and ``median_angle`` in degrees, ``within_11.25``,
``within_22.5``, ``within_30`` shares of pixels with an angle below that.
The median comes from a histogram of ``NORMAL_BIN_DEG``-wide bins: the
angle at which the cumulative count reaches half the pixels, linear within
its bin, which for image-sized pixel counts is ``np.median`` of all angles to
within 0.01 degree; the mean and the shares are exact.
"""

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from cen_jax.tasks.multitask import losses

NORMAL_BIN_DEG = 0.01
_NORMAL_BINS = int(round(180.0 / NORMAL_BIN_DEG))
NORMAL_THRESHOLDS_DEG = (11.25, 22.5, 30.0)
DELTA1 = 1.25

# Which way is better, for Delta_m.
HIGHER_IS_BETTER = {
    'miou': True, 'pixel_acc': True, 'mean_acc': True,
    'abs_err': False, 'abs_rel': False, 'rmse': False, 'delta1': True,
    'mean_angle': False, 'median_angle': False,
    **{f'within_{t:g}': True for t in NORMAL_THRESHOLDS_DEG},
}


def depth_sums(pred: jnp.ndarray, target: jnp.ndarray
               ) -> dict[str, jnp.ndarray]:
  """Per-batch sums for ``depth_metrics`` (any leading shape)."""
  valid = losses.depth_valid(target)
  t = jnp.where(valid, target, 1.0)
  err = jnp.where(valid, pred - target, 0.0)
  ratio = jnp.maximum(pred / t, t / jnp.where(pred > 0, pred, 1.0))
  good = valid & (pred > 0) & (ratio < DELTA1)
  return {
      'count': jnp.sum(valid),
      'abs_err': jnp.sum(jnp.abs(err)),
      'abs_rel': jnp.sum(jnp.abs(err) / t),
      'sq_err': jnp.sum(jnp.square(err)),
      'delta1': jnp.sum(good),
  }


def depth_metrics(sums: Mapping[str, float]) -> dict[str, float]:
  """Final depth metrics from summed ``depth_sums``; NaN with no pixels."""
  n = float(sums['count'])
  if n == 0:
    return dict.fromkeys(('abs_err', 'abs_rel', 'rmse', 'delta1'),
                         float('nan'))
  return {
      'abs_err': float(sums['abs_err']) / n,
      'abs_rel': float(sums['abs_rel']) / n,
      'rmse': float(np.sqrt(float(sums['sq_err']) / n)),
      'delta1': float(sums['delta1']) / n,
  }


def normal_angles(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Angle in degrees between ``pred`` and ``target`` (last axis)."""
  cos = jnp.sum(losses.unit(pred) * losses.unit(target), axis=-1)
  return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def normal_sums(pred: jnp.ndarray, target: jnp.ndarray
                ) -> dict[str, jnp.ndarray]:
  """Per-batch sums for ``normal_metrics`` (inputs ``(..., 3)``)."""
  valid = losses.normal_valid(target)
  angle = normal_angles(pred, target)
  bins = jnp.clip((angle / NORMAL_BIN_DEG).astype(jnp.int32), 0,
                  _NORMAL_BINS - 1)
  out = {
      'count': jnp.sum(valid),
      'angle': jnp.sum(jnp.where(valid, angle, 0.0)),
      'histogram': jnp.zeros(_NORMAL_BINS, jnp.int32).at[
          bins.reshape(-1)].add(valid.reshape(-1).astype(jnp.int32)),
  }
  for t in NORMAL_THRESHOLDS_DEG:
    out[f'within_{t:g}'] = jnp.sum(valid & (angle < t))
  return out


def _histogram_median(histogram: np.ndarray, bin_width: float) -> float:
  """The median of values binned in ``histogram``, linear within a bin."""
  counts = np.asarray(histogram, np.float64)
  cum = np.cumsum(counts)
  half = cum[-1] / 2.0
  k = int(np.searchsorted(cum, half))
  before = cum[k - 1] if k > 0 else 0.0
  return (k + (half - before) / counts[k]) * bin_width


def normal_metrics(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Final normal metrics from summed ``normal_sums``; NaN with no pixels."""
  n = float(sums['count'])
  names = ('mean_angle', 'median_angle') + tuple(
      f'within_{t:g}' for t in NORMAL_THRESHOLDS_DEG)
  if n == 0:
    return dict.fromkeys(names, float('nan'))
  out = {'mean_angle': float(sums['angle']) / n,
         'median_angle': _histogram_median(sums['histogram'],
                                           NORMAL_BIN_DEG)}
  for t in NORMAL_THRESHOLDS_DEG:
    out[f'within_{t:g}'] = float(sums[f'within_{t:g}']) / n
  return out


def delta_m(results: Mapping[str, Mapping[str, float]],
            baselines: Mapping[str, Mapping[str, float]],
            higher_is_better: Mapping[str, bool] | None = None) -> float:
  """Average relative gain over baselines, in percent (LibMTL's Delta_m).

  ``Delta_m = 100 / T * sum_t 1 / N_t * sum_i s_i (M_t,i - B_t,i) / B_t,i``
  with ``s_i = +1`` where higher is better and ``-1`` where lower is: each
  task's metrics are averaged first, then the T tasks, so a task with many
  metrics (normals: five) weighs as much as one with few.

  Args:
    results: ``{task: {metric: value}}`` of the model.
    baselines: the same for the single-task baselines; every metric in
      ``results`` must be here, non-zero.
    higher_is_better: direction per metric name; default
      ``HIGHER_IS_BETTER``.
  """
  direction = dict(HIGHER_IS_BETTER, **(higher_is_better or {}))
  gains = []
  for task, metrics in results.items():
    if not metrics:
      raise ValueError(f'Delta_m: task {task!r} has no metrics')
    per_metric = []
    for name, value in metrics.items():
      if name not in direction:
        raise ValueError(f'Delta_m: no direction for metric {name!r} of task '
                         f'{task!r}; pass higher_is_better')
      base = baselines.get(task, {}).get(name)
      if base is None or base == 0:
        raise ValueError(f'Delta_m: baseline of {task}/{name} is '
                         f'{"missing" if base is None else "zero"}')
      sign = 1.0 if direction[name] else -1.0
      per_metric.append(sign * (value - base) / base)
    gains.append(np.mean(per_metric))
  return float(100.0 * np.mean(gains))
