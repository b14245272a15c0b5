"""Segmentation metrics: an on-device confusion matrix and the official scores.

The official evaluation (reference §6) accumulates one ``K x K`` confusion
matrix over the whole validation set (rows = ground truth, columns =
prediction, pixels labelled ``>= K`` ignored) and derives pixel accuracy, mean
accuracy and mIoU from it with ``utils/meter.getScores``. The matrix is built
on device per batch (:func:`confusion_matrix`, jit- and sharding-friendly) and
summed by the caller; :func:`scores` turns the total into numbers at log time.
"""

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jnp.ndarray, preds: jnp.ndarray,
                     num_classes: int,
                     valid: jnp.ndarray | None = None) -> jnp.ndarray:
  """Counts (ground truth, prediction) pixel pairs over a batch.

  Works under ``jax.jit`` and with ``labels``/``preds`` sharded over the batch
  axis: the scatter-add becomes per-shard partial counts plus one all-reduce.

  Args:
    labels: ``(B, ...)`` int ground truth; values outside ``[0, K)``, i.e. the
      ignore label 255, are not counted.
    preds: ``(B, ...)`` int predictions, same shape as ``labels``; values
      outside ``[0, K)`` are not counted either (as in the official code).
    num_classes: ``K``, static.
    valid: optional ``(B,)`` bool mask; examples with ``False`` (the padding
      that fills the last eval batch) are not counted.

  Returns:
    ``(K, K)`` int32 counts, ``[i, j]`` = pixels of class ``i`` predicted as
    ``j``. int32 holds 2^31 pixels (about 7000 NYUDv2 images); accumulate
    across batches on the host in int64 when more is possible.
  """
  k = num_classes
  labels = labels.astype(jnp.int32)
  preds = preds.astype(jnp.int32)
  keep = (labels >= 0) & (labels < k) & (preds >= 0) & (preds < k)
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    keep &= valid.reshape(valid.shape + (1,) * (labels.ndim - 1))
  # Ignored pixels are routed to bin 0 with weight 0 so that every shape
  # stays static under jit.
  index = jnp.where(keep, labels * k + preds, 0)
  counts = jnp.zeros((k * k,), jnp.int32).at[index.ravel()].add(
      keep.ravel().astype(jnp.int32))
  return counts.reshape(k, k)


def scores(conf: Any,
           class_names: Sequence[str] | None = None) -> dict[str, Any]:
  """The official ``getScores``, in percent, safe on modern NumPy.

  Per class ``c``: accuracy = ``conf[c, c] / row_sum[c]`` and IoU =
  ``conf[c, c] / (row_sum[c] + col_sum[c] - conf[c, c])``. A 0/0 is NaN and is
  skipped by the means: a class absent from both ground truth and prediction
  counts in neither mean; a class that is predicted but never present counts
  in mIoU (as 0) but not in mean accuracy. As in the official code, an empty
  matrix scores 0 everywhere (its per-class IoUs are NaN).

  Args:
    conf: ``(K, K)`` confusion matrix (rows = ground truth), summed over the
      whole evaluation set; any array-like of counts.
    class_names: optional ``K`` names used as keys of ``iou_per_class``.

  Returns:
    A dict of Python floats, all in percent (0-100, as the paper and the
    official logs report them):
      ``pixel_acc``: ``trace / total``.
      ``mean_acc``: NaN-mean over classes of per-class accuracy.
      ``miou``: NaN-mean over classes of per-class IoU.
      ``iou_per_class``: dict from class name (or class index when no names
        are given) to IoU; NaN for classes absent from ground truth and
        prediction.

  Raises:
    ValueError: if ``conf`` is not square or ``class_names`` has the wrong
      length.
  """
  conf = np.asarray(conf, np.float64)
  if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
    raise ValueError(f'conf must be (K, K), got {conf.shape}.')
  k = conf.shape[0]
  names = list(range(k)) if class_names is None else list(class_names)
  if len(names) != k:
    raise ValueError(f'{len(names)} class names for {k} classes.')
  diag = np.diag(conf)
  rows, cols = conf.sum(1), conf.sum(0)
  with np.errstate(divide='ignore', invalid='ignore'):
    acc = diag / rows
    iou = diag / (rows + cols - diag)
  total = conf.sum()
  iou_per_class = {n: float(v) * 100 for n, v in zip(names, iou, strict=True)}
  if total == 0:
    return {'pixel_acc': 0.0, 'mean_acc': 0.0, 'miou': 0.0,
            'iou_per_class': iou_per_class}
  return {
      'pixel_acc': float(diag.sum() / total) * 100,
      'mean_acc': float(np.nanmean(acc)) * 100,
      'miou': float(np.nanmean(iou)) * 100,
      'iou_per_class': iou_per_class,
  }
