"""Exchange tables and plots on crafted tiny-model parameters."""

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from cen_jax.core import exchange
from cen_jax.core import exchange_analysis as analysis
from cen_jax.tasks.segmentation import models

TINY = dict(depth='tiny', num_classes=5, exchange='bn_threshold', width=8,
            decoder_features=(16, 8))
THRESHOLD = 0.02
# bn2 channels of the tiny model: 8, 16, 32 and 64 (120 in all).
# (site, modality, values below the threshold, in |gamma|); 0.02 itself
# and -0.03 are not below it.
SMALL = {
    ('layer1_0', 0): [0.001, -0.005, 0.0],
    ('layer2_0', 1): [0.019, -0.0199, 1e-6, -1e-4],
    ('layer3_0', 0): [0.01] * 8,
    ('layer3_0', 1): [-0.015] * 16,
}
# Exchanged counts per site (rows) and modality (columns).
EXCHANGED = np.array([[3, 0], [0, 4], [8, 16], [0, 0]])
CHANNELS = np.array([8, 16, 32, 64])


@functools.lru_cache(maxsize=None)
def _params():
  """Tiny-model params: gamma 1 (or the edge cases), then ``SMALL``."""
  model = models.build(TINY)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), jnp.zeros((2, 1, 32, 32, 3)))
  params = jax.tree.map(lambda s: np.ones(s.shape, np.float32),
                        shapes['params'])
  encoder = params['encoder']
  encoder['layer4_0']['bn2']['scale'][0, :2] = [THRESHOLD, -0.03]
  for (block, m), values in SMALL.items():
    encoder[block]['bn2']['scale'][m, :len(values)] = values
  return params


def _scales():
  return models.bn2_scales(_params())


def test_exchange_table_counts_the_channels_below_threshold():
  mask_fn = exchange.get_mask_fn('bn_threshold', threshold=THRESHOLD)
  table = analysis.exchange_table(_scales(), mask_fn)
  assert table.sites == ('layer1.0', 'layer2.0', 'layer3.0', 'layer4.0')
  np.testing.assert_array_equal(table.channels, CHANNELS)
  np.testing.assert_array_equal(table.exchanged, EXCHANGED)
  np.testing.assert_array_equal(
      table.fractions, [[3 / 8, 0], [0, 4 / 16], [8 / 32, 16 / 32], [0, 0]])
  np.testing.assert_array_equal(analysis.overall_fractions(table),
                                [11 / 120, 20 / 120])
  # Other variants plug in.
  none = analysis.exchange_table(_scales(), exchange.get_mask_fn('none'))
  assert none.exchanged.sum() == 0


def test_format_exchange_table_gives_percentages():
  mask_fn = exchange.get_mask_fn('bn_threshold', threshold=THRESHOLD)
  text = analysis.format_exchange_table(
      analysis.exchange_table(_scales(), mask_fn), ('rgb', 'depth'))
  lines = text.splitlines()
  assert lines[0] == '| site | channels | rgb | depth |'
  assert lines[2] == '| layer1.0 | 8 | 37.5% | 0.0% |'
  assert lines[4] == '| layer3.0 | 32 | 25.0% | 50.0% |'
  assert lines[-1] == '| all | 120 | 9.2% | 16.7% |'
  with pytest.raises(ValueError, match='1 modality names'):
    analysis.format_exchange_table(
        analysis.exchange_table(_scales(), mask_fn), ('rgb',))


def test_plot_exchange_fractions_draws_the_table():
  mask_fn = exchange.get_mask_fn('bn_threshold', threshold=THRESHOLD)
  table = analysis.exchange_table(_scales(), mask_fn)
  fig = analysis.plot_exchange_fractions(table, ('rgb', 'depth'),
                                         figsize=(6, 3), dpi=50)
  ax = fig.axes[0]
  for m, bars in enumerate(ax.containers):
    np.testing.assert_allclose([b.get_height() for b in bars],
                               EXCHANGED[:, m] / CHANNELS)
  assert [t.get_text() for t in ax.get_xticklabels()] == list(table.sites)
  assert [t.get_text() for t in ax.get_legend().get_texts()] == [
      'rgb', 'depth']
  image = analysis.figure_to_rgb(fig)
  assert image.shape == (150, 300, 3) and image.dtype == np.uint8
  assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2  # Not blank.
  png = analysis.figure_to_png(fig)
  assert png[:8] == b'\x89PNG\r\n\x1a\n'
  decoded = np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))
  assert decoded.shape == (150, 300, 3)


def test_plot_gamma_histograms_counts_and_marks_the_threshold():
  fig = analysis.plot_gamma_histograms(_scales(), THRESHOLD, ('rgb', 'depth'))
  assert len(fig.axes) == 2
  for m, ax in enumerate(fig.axes):
    heights = np.array([p.get_height() for p in ax.patches])
    right = np.array([p.get_x() + p.get_width() for p in ax.patches])
    assert heights.sum() == 120
    below = heights[right <= THRESHOLD * (1 + 1e-9)].sum()
    assert below == EXCHANGED[:, m].sum()
    np.testing.assert_allclose(ax.lines[0].get_xdata(), THRESHOLD)
    assert ax.get_xscale() == 'log'
  # The exact zero lands in the first bin, 3 decades below the threshold.
  first = fig.axes[0].patches[0]
  np.testing.assert_allclose(first.get_x(), THRESHOLD / 1000)
  assert first.get_height() == 1
  assert fig.axes[0].get_title().startswith('rgb: 11 of 120')
  assert fig.axes[1].get_title().startswith('depth: 20 of 120')


def test_summary_images_are_rgb_uint8_of_the_figure_size():
  mask_fn = exchange.get_mask_fn('bn_threshold', threshold=THRESHOLD)
  images = analysis.summary_images(_scales(), mask_fn, THRESHOLD,
                                   ('rgb', 'depth'))
  assert images['exchange_fractions'].shape == (400, 800, 3)
  assert images['gamma_histograms'].shape == (500, 800, 3)
  assert all(v.dtype == np.uint8 for v in images.values())
