"""What a trained CEN exchanges: per-site fractions and norm-scale plots.

CEN exchanges channel ``c`` of modality ``m`` at an exchange site (the bn2 of
a segmentation Bottleneck, the IN of a translation encoder block) where the
exchange variant's mask is set, for ``'bn_threshold'`` where
``|gamma_m[c]| < threshold`` (reference §2.3). These helpers read that off
the sites' scales, ``{site: (M, C) gamma}`` in network order (each task
knows where its sites are, e.g. ``segmentation.models.bn2_scales``):
:func:`exchange_table` counts the exchanged channels per site and modality,
:func:`plot_exchange_fractions` and :func:`plot_gamma_histograms` draw them,
and :func:`summary_images` renders both as uint8 images for TensorBoard.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg
canvas: no pyplot, no global backend switch, nothing set at import.
"""

import io
import math
from typing import Any, Mapping, NamedTuple, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from cen_jax.core import exchange

Scales = Mapping[str, Any]


class ExchangeTable(NamedTuple):
  """Exchanged channels per exchange site and modality.

  Attributes:
    sites: the L site names in network order, ``('layer1.0', ...)``.
    channels: ``(L,)`` int, channels C of each site.
    exchanged: ``(L, M)`` float64, channels replaced by the other
      modalities (whole numbers for hard rules; soft rules add up shares).
    fractions: ``(L, M)`` float64, ``exchanged / channels``.
  """
  sites: tuple[str, ...]
  channels: np.ndarray
  exchanged: np.ndarray
  fractions: np.ndarray


def _modality_names(names: Sequence[str] | None, num: int) -> tuple[str, ...]:
  if names is None:
    return tuple(f'modality {m}' for m in range(num))
  if len(names) != num:
    raise ValueError(f'{len(names)} modality names {tuple(names)} for '
                     f'{num} modalities')
  return tuple(names)


def exchange_table(scales: Scales,
                   weights_fn: exchange.MaskFn) -> ExchangeTable:
  """Counts the channels that ``weights_fn`` exchanges at every site.

  Args:
    scales: ``{site: (M, C) gamma}`` of every exchange site, in order.
    weights_fn: the model's ``exchange.weights`` (or a mask rule); soft
      rules count the exchanged share of each channel.

  Returns:
    The :class:`ExchangeTable`.
  """
  exchanged = np.stack([
      np.asarray(weights_fn(scale, site=site), np.float64).sum(axis=-1)
      for site, scale in scales.items()])
  channels = np.array([s.shape[-1] for s in scales.values()], np.int64)
  return ExchangeTable(tuple(scales), channels, exchanged,
                       exchanged / channels[:, None])


def overall_fractions(table: ExchangeTable) -> np.ndarray:
  """``(M,)`` fraction of all site channels exchanged, per modality."""
  return table.exchanged.sum(axis=0) / table.channels.sum()


def format_exchange_table(table: ExchangeTable,
                          modality_names: Sequence[str] | None = None) -> str:
  """A Markdown table: one row per site plus the overall row, in percent."""
  names = _modality_names(modality_names, table.exchanged.shape[1])
  lines = ['| site | channels | ' + ' | '.join(names) + ' |',
           '|---|---:|' + '---:|' * len(names)]
  rows = list(zip(table.sites, table.channels, table.fractions))
  rows.append(('all', table.channels.sum(), overall_fractions(table)))
  for site, channels, fractions in rows:
    cells = ' | '.join(f'{100 * f:.1f}%' for f in fractions)
    lines.append(f'| {site} | {channels} | {cells} |')
  return '\n'.join(lines)


def _figure(figsize: tuple[float, float], dpi: int) -> Figure:
  fig = Figure(figsize=figsize, dpi=dpi, layout='constrained')
  FigureCanvasAgg(fig)  # Attaches itself as fig.canvas.
  return fig


def plot_exchange_fractions(table: ExchangeTable,
                            modality_names: Sequence[str] | None = None, *,
                            figsize: tuple[float, float] = (8.0, 4.0),
                            dpi: int = 100) -> Figure:
  """Grouped bars: the exchanged fraction per site, one colour per modality.

  Args:
    table: from :func:`exchange_table`.
    modality_names: legend labels, in modality order.
    figsize: inches; the image is ``figsize * dpi`` pixels.
    dpi: dots per inch.

  Returns:
    A Figure with one Axes; ``axes[0].containers[m]`` holds modality m's
    bars, whose heights are ``table.fractions[:, m]``.
  """
  num_sites, num_modalities = table.fractions.shape
  names = _modality_names(modality_names, num_modalities)
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  width = 0.8 / num_modalities
  x = np.arange(num_sites)
  for m, name in enumerate(names):
    ax.bar(x + (m - (num_modalities - 1) / 2) * width,
           table.fractions[:, m], width, label=name)
  ax.set_xticks(x, table.sites, rotation=90 if num_sites > 16 else 0,
                fontsize='small')
  ax.set_ylim(0, max(0.05, 1.1 * float(table.fractions.max())))
  ax.set_ylabel('exchanged fraction of channels')
  ax.set_title('Channel exchange per bn2 (overall: ' + ', '.join(
      f'{n} {100 * f:.1f}%' for n, f in zip(names, overall_fractions(table)))
               + ')', fontsize='medium')
  ax.legend()
  return fig


def gamma_values(scales: Scales) -> np.ndarray:
  """``(M, N)`` |gamma| of every channel of every site, per modality."""
  return np.abs(np.concatenate([np.asarray(s) for s in scales.values()], -1))


def _log_bins(gammas: np.ndarray, threshold: float,
              per_decade: int) -> np.ndarray:
  """Log-spaced edges with ``threshold`` on an edge, 3 decades below it."""
  above = max(1, math.ceil(per_decade * np.log10(
      max(float(gammas.max()), threshold) / threshold)))
  return threshold * 10.0 ** (np.arange(-3 * per_decade, above + 1)
                              / per_decade)


def plot_gamma_histograms(scales: Scales, threshold: float,
                          modality_names: Sequence[str] | None = None, *,
                          bins_per_decade: int = 10,
                          figsize: tuple[float, float] | None = None,
                          dpi: int = 100) -> Figure:
  """Histograms of bn2 |gamma| per modality, log x, threshold marked.

  The bins are log-spaced with ``threshold`` on a bin edge, so the bars
  left of the dashed line count exactly the exchanged channels of the
  ``'bn_threshold'`` rule; they start 3 decades below the threshold, and
  smaller values (including exact zeros, which a log axis cannot show) are
  counted in the first bin.

  Args:
    scales: ``{site: (M, C) gamma}`` of every exchange site.
    threshold: the exchange threshold, drawn as a vertical dashed line.
    modality_names: subplot titles, in modality order.
    bins_per_decade: bin resolution.
    figsize: inches, default ``(8, 2.5 * M)``.
    dpi: dots per inch.

  Returns:
    A Figure with one Axes per modality; each holds the histogram bars
    (``ax.patches``) and the threshold line (``ax.lines[0]``).
  """
  gammas = gamma_values(scales)
  names = _modality_names(modality_names, gammas.shape[0])
  # Compare in the parameters' precision, as the exchange mask does: the
  # float32 0.02 is below the float64 0.02.
  threshold = float(gammas.dtype.type(threshold))
  edges = _log_bins(gammas, threshold, bins_per_decade)
  fig = _figure(figsize or (8.0, 2.5 * len(names)), dpi)
  axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
  for ax, name, g in zip(axes, names, gammas):
    ax.hist(np.clip(g, edges[0], None), bins=edges)
    ax.axvline(threshold, color='red', linestyle='--')
    ax.set_xscale('log')
    ax.set_ylabel('channels')
    ax.set_title(f'{name}: {int((g < threshold).sum())} of {g.size} bn2 '
                 f'channels below |gamma| = {threshold:g}', fontsize='medium')
  axes[-1].set_xlabel('|gamma| of bn2')
  return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
  """Renders a figure to a uint8 ``(H, W, 3)`` array (H, W = figsize*dpi)."""
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  return np.array(canvas.buffer_rgba())[..., :3]


def figure_to_png(fig: Figure) -> bytes:
  """Renders a figure to PNG bytes."""
  buffer = io.BytesIO()
  FigureCanvasAgg(fig).print_png(buffer)
  return buffer.getvalue()


def summary_images(scales: Scales, weights_fn: exchange.MaskFn,
                   threshold: float,
                   modality_names: Sequence[str] | None = None
                   ) -> dict[str, np.ndarray]:
  """Both plots as uint8 ``(H, W, 3)`` images, keyed for TensorBoard.

  ``clu`` writers take ``(N, H, W, C)``: log them with
  ``writer.write_images(step, {k: v[None] for k, v in images.items()})``.

  Args:
    scales: ``{site: (M, C) gamma}`` of every exchange site.
    weights_fn: the model's ``exchange.weights``.
    threshold: the |gamma| threshold to mark on the histograms.
    modality_names: names in modality order.

  Returns:
    ``{'exchange_fractions': image, 'gamma_histograms': image}``.
  """
  table = exchange_table(scales, weights_fn)
  return {
      'exchange_fractions': figure_to_rgb(
          plot_exchange_fractions(table, modality_names)),
      'gamma_histograms': figure_to_rgb(
          plot_gamma_histograms(scales, threshold, modality_names)),
  }


def write_analysis(out: Any, scales: Scales, variant: exchange.Exchange,
                   modality_names: Sequence[str], *, norm_name: str,
                   step: int) -> tuple[dict[str, Any], str]:
  """Writes the exchange analysis of one checkpoint into ``out``.

  Files: ``exchange_fractions.png`` (exchanged fraction of channels per
  site and modality), ``gamma_histograms.png`` (|gamma| per modality,
  threshold marked) and ``exchange_table.md`` (the fractions as a table).

  Args:
    out: a ``pathlib.Path`` directory (created).
    scales: ``{site: (M, C) gamma}``.
    variant: the model's exchange.
    modality_names: names in modality order.
    norm_name: what the scales are, for the table's title (``'bn2'``).
    step: the checkpoint's step.

  Returns:
    ``({'fractions': path, 'histograms': path, 'table': path}, table
    text)``.
  """
  out.mkdir(parents=True, exist_ok=True)
  table = exchange_table(scales, variant.weights)
  text = format_exchange_table(table, modality_names)
  paths = {'fractions': out / 'exchange_fractions.png',
           'histograms': out / 'gamma_histograms.png',
           'table': out / 'exchange_table.md'}
  paths['fractions'].write_bytes(figure_to_png(
      plot_exchange_fractions(table, modality_names)))
  paths['histograms'].write_bytes(figure_to_png(
      plot_gamma_histograms(scales, variant.threshold, modality_names)))
  paths['table'].write_text(
      f'Exchanged {norm_name} channels, {variant.name} exchange, '
      f'checkpoint step {step}\n\n{text}\n')
  return paths, text
