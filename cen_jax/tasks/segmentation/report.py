"""The evaluation report of semantic segmentation: scores, tables, figures.

``--mode=eval`` accumulates one confusion matrix per output (for example
``rgb``, ``depth`` and their ``ensemble``) over the whole evaluation set;
:func:`write_report` turns them into the files a reader compares runs with
and a console summary for the log. The scores themselves are the official
``getScores`` of :func:`cen_jax.tasks.segmentation.metrics.scores`.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg
canvas: no pyplot, no global backend switch, nothing set at import.
"""

from collections.abc import Sequence
import csv
import json
import math
import pathlib
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from cen_jax.tasks.segmentation import metrics

# 10 x 9 inches at 100 dpi keeps 40 class names legible on both axes.
_FIGSIZE = (10.0, 9.0)
_DPI = 100
# Above this many classes the per-cell numbers would overlap.
_MAX_ANNOTATED_CLASSES = 20
_MD_NAN = '\u2014'  # Em dash.


def _validate(confusions: Any, output_names: Sequence[str],
              class_names: Sequence[str]) -> np.ndarray:
  """Checks shapes, dtype and names; returns the matrices as int64."""
  confusions = np.asarray(confusions)
  if confusions.ndim != 3:
    raise ValueError('confusions must be (outputs, classes, classes), got '
                     f'shape {confusions.shape}.')
  num_outputs, rows, cols = confusions.shape
  if rows != cols:
    raise ValueError(f'confusion matrices must be square, got {rows} x {cols}'
                     ' (rows = ground truth, columns = prediction).')
  if num_outputs != len(output_names):
    raise ValueError(f'{num_outputs} confusion matrices for '
                     f'{len(output_names)} output names {tuple(output_names)}.')
  if rows != len(class_names):
    raise ValueError(f'{rows} x {rows} confusion matrices for '
                     f'{len(class_names)} class names.')
  if not np.issubdtype(confusions.dtype, np.integer):
    raise ValueError(f'confusions must hold integer counts, got dtype '
                     f'{confusions.dtype}.')
  if (confusions < 0).any():
    raise ValueError('confusions hold negative counts.')
  # Names become file names and JSON keys: they must be distinct, and an
  # output name must not reach outside the report directory.
  for kind, names in (('output', output_names), ('class', class_names)):
    if len(set(names)) != len(names):
      raise ValueError(f'duplicate {kind} names in {tuple(names)}.')
  for name in output_names:
    if not name or '/' in name or '\\' in name or name in ('.', '..'):
      raise ValueError(f'output name {name!r} is not a valid file name part.')
  return confusions.astype(np.int64)


def _fmt(value: float, decimals: int, nan: str) -> str:
  return nan if math.isnan(value) else f'{value:.{decimals}f}'


def _json_number(value: float) -> float | None:
  # JSON has no NaN; null marks a class absent from ground truth and
  # prediction alike.
  return None if math.isnan(value) else round(value, 4)


def _scores_json(results: dict[str, dict[str, Any]],
                 confusions: np.ndarray,
                 class_names: Sequence[str]) -> dict[str, Any]:
  outputs = {}
  for name, result in results.items():
    outputs[name] = {
        key: _json_number(result[key])
        for key in ('pixel_acc', 'mean_acc', 'miou')
    }
    outputs[name]['iou_per_class'] = {
        str(c): _json_number(v) for c, v in result['iou_per_class'].items()
    }
  return {
      'outputs': outputs,
      'class_names': [str(c) for c in class_names],
      'pixels': {name: int(conf.sum())
                 for name, conf in zip(results, confusions, strict=True)},
  }


def _per_class_rows(results: dict[str, dict[str, Any]],
                    class_names: Sequence[str]) -> list[list[float]]:
  """``[class][output]`` IoU in percent, then one last row of mIoUs."""
  rows = [[r['iou_per_class'][c] for r in results.values()]
          for c in class_names]
  rows.append([r['miou'] for r in results.values()])
  return rows


def _markdown(results: dict[str, dict[str, Any]],
              class_names: Sequence[str]) -> str:
  names = list(results)
  lines = ['| index | class | ' + ' | '.join(names) + ' |',
           '|---:|:---|' + '---:|' * len(names)]
  labels = [(str(i), str(c)) for i, c in enumerate(class_names)]
  labels.append(('', 'mIoU'))
  for (index, label), values in zip(
      labels, _per_class_rows(results, class_names), strict=True):
    label = label.replace('|', '\\|')  # A bare '|' would split the cell.
    cells = [_fmt(v, 2, _MD_NAN) for v in values]
    lines.append(f'| {index} | {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _write_csv(path: pathlib.Path, results: dict[str, dict[str, Any]],
               class_names: Sequence[str]) -> None:
  labels = [(str(i), str(c)) for i, c in enumerate(class_names)]
  labels.append(('', 'mIoU'))
  with path.open('w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(['index', 'class', *results])
    for (index, label), values in zip(
        labels, _per_class_rows(results, class_names), strict=True):
      writer.writerow([index, label, *(_fmt(v, 4, '') for v in values)])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           left: int) -> list[str]:
  """Fixed-width lines; the first ``left`` columns are left-aligned."""
  widths = [max(len(r[j]) for r in [header, *rows])
            for j in range(len(header))]
  lines = []
  for row in [header, *rows]:
    cells = [c.ljust(w) if j < left else c.rjust(w)
             for j, (c, w) in enumerate(zip(row, widths, strict=True))]
    lines.append('  '.join(cells).rstrip())
  return lines


def _text(results: dict[str, dict[str, Any]],
          class_names: Sequence[str]) -> str:
  summary = [[name, *(_fmt(r[k], 4, '-')
                      for k in ('pixel_acc', 'mean_acc', 'miou'))]
             for name, r in results.items()]
  lines = _table(['output', 'pixel acc', 'mean acc', 'mIoU'], summary, 1)
  # The mIoU row is left out: the summary above already shows it.
  per_class = [[str(i), str(c), *(_fmt(v, 2, '-') for v in values)]
               for i, (c, values) in enumerate(zip(
                   class_names, _per_class_rows(results, class_names)[:-1],
                   strict=True))]
  lines += ['', 'IoU per class (%):']
  lines += _table(['#', 'class', *results], per_class, 2)
  return '\n'.join(lines)


def _row_normalised(conf: np.ndarray) -> np.ndarray:
  """Each row divided by its sum; rows of absent classes stay 0."""
  rows = conf.sum(1, keepdims=True).astype(np.float64)
  return np.divide(conf, rows, out=np.zeros(conf.shape), where=rows > 0)


def _confusion_figure(conf: np.ndarray, class_names: Sequence[str],
                      title: str) -> Figure:
  fig = Figure(figsize=_FIGSIZE, dpi=_DPI, layout='constrained')
  FigureCanvasAgg(fig)  # Attaches itself as fig.canvas.
  ax = fig.add_subplot()
  normalised = _row_normalised(conf)
  image = ax.imshow(normalised, cmap='Blues', vmin=0.0, vmax=1.0,
                    interpolation='nearest')
  ticks = np.arange(len(class_names))
  labels = [str(c) for c in class_names]
  ax.set_xticks(ticks, labels, rotation=90, fontsize='x-small')
  ax.set_yticks(ticks, labels, fontsize='x-small')
  ax.set_xlabel('prediction')
  ax.set_ylabel('ground truth')
  ax.set_title(title, fontsize='medium')
  if len(class_names) <= _MAX_ANNOTATED_CLASSES:
    for (i, j), value in np.ndenumerate(normalised):
      # White on the dark end of the colour map, black elsewhere.
      ax.text(j, i, f'{value:.2f}', ha='center', va='center',
              fontsize='x-small', color='white' if value > 0.5 else 'black')
  fig.colorbar(image, ax=ax, label='fraction of the ground-truth pixels')
  return fig


def write_report(directory: pathlib.Path | str, confusions: np.ndarray,
                 output_names: Sequence[str], class_names: Sequence[str]
                 ) -> tuple[dict[str, pathlib.Path], str]:
  """Writes the scores, per-class tables and confusion matrices of an eval.

  Args:
    directory: where to write; created with its parents if missing.
    confusions: ``(O, K, K)`` integer counts, one confusion matrix per output
      (rows = ground truth, columns = prediction), summed over the whole
      evaluation set.
    output_names: the ``O`` output names, e.g. ``('rgb', 'depth',
      'ensemble')``; they name the per-output files.
    class_names: the ``K`` class names.

  Returns:
    ``(paths, text)``. ``paths`` maps ``'scores'`` (``scores.json``: every
    score in percent, 4 decimals, ``null`` for NaN, plus the pixels counted
    per output), ``'per_class_md'`` (``per_class_iou.md``),
    ``'per_class_csv'`` (``per_class_iou.csv``), and for each output
    ``'confusion_npy/<output>'`` (``confusion_<output>.npy``, the int64
    matrix) and ``'confusion_png/<output>'`` (``confusion_<output>.png``, its
    row-normalised heat-map) to the written files. ``text`` is an ASCII
    console summary: scores per output, then IoU per class and output.

  Raises:
    ValueError: if the shapes, dtype or names do not match.
  """
  confusions = _validate(confusions, output_names, class_names)
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  results = {name: metrics.scores(conf, class_names)
             for name, conf in zip(output_names, confusions, strict=True)}
  paths = {'scores': directory / 'scores.json',
           'per_class_md': directory / 'per_class_iou.md',
           'per_class_csv': directory / 'per_class_iou.csv'}
  # allow_nan=False: a NaN slipping through must fail, not write bad JSON.
  paths['scores'].write_text(json.dumps(
      _scores_json(results, confusions, class_names), indent=2,
      allow_nan=False) + '\n', encoding='utf-8')
  paths['per_class_md'].write_text(_markdown(results, class_names),
                                   encoding='utf-8')
  _write_csv(paths['per_class_csv'], results, class_names)
  for name, conf in zip(output_names, confusions, strict=True):
    npy = paths[f'confusion_npy/{name}'] = directory / f'confusion_{name}.npy'
    np.save(npy, conf)
    png = paths[f'confusion_png/{name}'] = directory / f'confusion_{name}.png'
    title = (f'{name}: row-normalised confusion, '
             f'mIoU {results[name]["miou"]:.2f}%')
    _confusion_figure(conf, class_names, title).savefig(png, dpi=_DPI)
  return paths, _text(results, class_names)
