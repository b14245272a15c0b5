"""A small, deterministic, generated Taskonomy-like set (no download).

Each scene is a bumpy surface facing the camera, cut into 3-6 Voronoi
patches. Every patch gets one of four paints, drawn independently of the
surface, and every pixel a random grain ``g`` in [0, 1) that darkens the
paint by up to 30 %. Rougher paints give stronger texture edges:

=====  ============  =========================================
paint  RGB           edge_texture (16-bit; uint8 after the
                     official ``x * 255 / 11355``)
=====  ============  =========================================
0      210, 60, 50   500 + 2000 g     (11-56)
1      60, 170, 70   3300 + 2000 g    (74-119)
2      60, 80, 210   6100 + 2000 g    (136-181)
3      225, 200, 60  8900 + 2000 g    (199-244)
=====  ============  =========================================

Five domains are written, stored as Taskonomy stores them:

* ``reshading``: 8-bit grey ``s = i * (0.15 + 0.85 * max(0, n . l))`` for
  the surface normal ``n``, a random light direction ``l`` and intensity
  ``i`` in [0.35, 1];
* ``edge_texture``: 16-bit, as in the table (below the official maximum);
* ``rgb``: 8-bit ``reshading / 255 * paint * (1 - 0.3 g)``;
* ``depth_zbuffer``: 16-bit z-buffer depth in 1/512 m, about 2-3.5 m;
* ``normal``: 8-bit camera-frame normals, ``(n + 1) / 2 * 255``.

The translation shading + texture edges -> RGB (the official default,
``-i 2 7 0``) needs both inputs. ``reshading`` alone says nothing about the
paint or the grain (drawn independently of the surface), so the hue is a
guess. ``edge_texture`` alone gives paint and grain at every pixel but
nothing about the light, so the brightness is a guess between 0.05 and 1
times the paint. With both, RGB is a per-pixel function of the two
stored values (up to the 8-bit rounding of the edges).
``tests/test_data_synthetic_translation.py`` measures it with the best
per-pixel predictors of RGB (uint8 units, mean squared error on held-out
scenes): about 1150 from ``reshading``, 500 from ``edge_texture``, 6 from
both (1465 from neither).

``write_taskonomy_folder`` writes these PNGs and the two list files in the
official folder layout (see ``data/taskonomy.py``); the builder
``synthetic_taskonomy`` writes such a folder under
``<data_dir>/downloads/synthetic_taskonomy/`` (kept, as an example of the
layout) and builds it with the ``taskonomy`` builder's code, so the real
reading and preprocessing path is exercised. Configs:
``synthetic_taskonomy`` (= ``/default``, 72x72 so that a 64 crop works,
300 train / 50 test, about 3 s to build on 2 cores) and
``synthetic_taskonomy/tiny`` (40x40, 16 / 8).
"""

import dataclasses
import os
import pathlib
import shutil
import tempfile

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data import taskonomy

DOMAINS = ('rgb', 'normal', 'reshading', 'depth_zbuffer', 'edge_texture')
PAINTS = np.array([[210, 60, 50], [60, 170, 70], [60, 80, 210],
                   [225, 200, 60]], np.float64)
# edge_texture of paint p: EDGE_BASE + p * EDGE_STEP + grain * EDGE_GRAIN.
EDGE_BASE, EDGE_STEP, EDGE_GRAIN = 500, 2800, 2000
GRAIN_DARKENING = 0.3
AMBIENT = 0.15
_DEPTH_UNITS_PER_M = 512.0  # Taskonomy depth PNGs: 1/512 m.


def _surface(size: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
  """Height (S, S) in image widths and unit normals (S, S, 3), z to camera."""
  v, u = (np.mgrid[:size, :size] + 0.5) / size
  height = np.zeros((size, size))
  for _ in range(rng.integers(3, 7)):
    cu, cv = rng.uniform(-0.1, 1.1, 2)
    width = rng.uniform(0.08, 0.25)
    height += rng.uniform(-0.12, 0.12) * np.exp(
        -((u - cu) ** 2 + (v - cv) ** 2) / (2 * width ** 2))
  du = np.gradient(height, axis=1) * size
  dv = np.gradient(height, axis=0) * size
  normal = np.stack([-du, -dv, np.ones_like(du)], axis=-1)
  return height, normal / np.linalg.norm(normal, axis=-1, keepdims=True)


def _shading(normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Lambertian shading, ambient included, under a random light (S, S)."""
  elevation = rng.uniform(np.radians(25), np.radians(65))
  azimuth = rng.uniform(0, 2 * np.pi)
  light = np.array([np.cos(elevation) * np.cos(azimuth),
                    np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
  intensity = rng.uniform(0.35, 1.0)
  return intensity * (AMBIENT + (1 - AMBIENT) * np.maximum(normal @ light,
                                                           0.0))


def _paint(size: int, rng: np.random.Generator) -> np.ndarray:
  """Paint index (S, S) of 3-6 Voronoi patches."""
  n = rng.integers(3, 7)
  seeds = rng.uniform(0, size, (n, 2))
  y, x = np.mgrid[:size, :size]
  patch = np.argmin((y[..., None] - seeds[:, 0]) ** 2
                    + (x[..., None] - seeds[:, 1]) ** 2, axis=-1)
  return rng.integers(0, len(PAINTS), n)[patch]


def render(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Renders one scene's domains, as Taskonomy stores them.

  Args:
    size: image height = width.
    rng: the scene's random generator.

  Returns:
    ``rgb`` (S, S, 3) uint8, ``normal`` (S, S, 3) uint8, ``reshading``
    (S, S) uint8, ``depth_zbuffer`` (S, S) uint16 in 1/512 m,
    ``edge_texture`` (S, S) uint16 (at most 10900 < 11355, the official
    maximum).
  """
  height, normal = _surface(size, rng)
  shading = np.round(_shading(normal, rng) * 255).astype(np.uint8)
  paint = _paint(size, rng)
  grain = rng.random((size, size))
  albedo = PAINTS[paint] * (1 - GRAIN_DARKENING * grain)[..., None]
  # RGB from the stored (quantised) shading: a function of the two inputs.
  rgb = np.round(shading[..., None] / 255.0 * albedo).astype(np.uint8)
  edge_texture = np.round(EDGE_BASE + EDGE_STEP * paint + EDGE_GRAIN * grain)
  depth_m = rng.uniform(2.0, 3.5) - height
  return {
      'rgb': rgb,
      'normal': np.round((normal + 1) / 2 * 255).astype(np.uint8),
      'reshading': shading,
      'depth_zbuffer': np.round(depth_m * _DEPTH_UNITS_PER_M).astype(
          np.uint16),
      'edge_texture': edge_texture.astype(np.uint16),
  }


def _write_png(path: pathlib.Path, image: np.ndarray) -> None:
  if image.ndim == 3:
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  if not cv2.imwrite(str(path), image):
    raise OSError(f'{path}: could not write PNG')


def write_taskonomy_folder(path: str | os.PathLike, *, num_train: int,
                           num_test: int, size: int, seed: int
                           ) -> pathlib.Path:
  """Writes a generated set in the official Taskonomy layout.

  Examples are ``point_<i>_view_0`` (train) and ``point_<i>_view_1``
  (test), rendered from ``np.random.default_rng([seed, split, i])``; the
  list files ``train_domain.txt`` and ``val_domain.txt`` hold the official
  ``{domain}`` templates without a final newline, as the official lists.

  Args:
    path: a directory that does not exist yet or is empty.
    num_train: examples listed in ``train_domain.txt``.
    num_test: examples listed in ``val_domain.txt``.
    size: image height = width.
    seed: generator seed.

  Returns:
    ``path``.

  Raises:
    FileExistsError: ``path`` is a non-empty directory or a file (nothing
      is overwritten).
  """
  root = pathlib.Path(path)
  if root.exists() and (not root.is_dir() or any(root.iterdir())):
    raise FileExistsError(f'{root}: exists and is not an empty directory; '
                          'write the generated set somewhere new')
  for domain in DOMAINS:
    (root / domain).mkdir(parents=True, exist_ok=True)
  counts = (num_train, num_test)
  for split_id, list_name in enumerate(taskonomy.SPLIT_LISTS.values()):
    lines = []
    for i in range(counts[split_id]):
      scene = render(size, np.random.default_rng([seed, split_id, i]))
      stem = f'point_{i}_view_{split_id}_domain_'
      for domain, image in scene.items():
        _write_png(root / domain / f'{stem}{domain}.png', image)
      lines.append(f'{taskonomy.PLACEHOLDER}/{stem}'
                   f'{taskonomy.PLACEHOLDER}.png')
    (root / list_name).write_text('\n'.join(lines))
  return root


@dataclasses.dataclass(eq=False)
class SyntheticTaskonomyConfig(taskonomy.TaskonomyConfig):
  """Attributes: image size, split sizes and the generator seed."""
  image_size: int = 72
  num_train: int = 300
  num_test: int = 50
  seed: int = 0


def generated_folder(download_dir: str | os.PathLike,
                     config: SyntheticTaskonomyConfig) -> pathlib.Path:
  """The folder of ``config`` under ``download_dir``, written if missing.

  It is written to a temporary sibling first and renamed into place, so a
  folder that exists is complete (also when another process won the race).
  """
  base = pathlib.Path(download_dir) / 'synthetic_taskonomy'
  root = base / (f'{config.image_size}px_{config.num_train}_'
                 f'{config.num_test}_seed{config.seed}')
  if root.is_dir():
    return root
  base.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=base, prefix='.incomplete-'))
  try:
    write_taskonomy_folder(tmp, num_train=config.num_train,
                           num_test=config.num_test, size=config.image_size,
                           seed=config.seed)
    tmp.rename(root)
  except OSError:
    if not root.is_dir():
      raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return root


class SyntheticTaskonomy(tfds.core.GeneratorBasedBuilder):
  """Generated shading/texture/RGB scenes read by the taskonomy code."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticTaskonomyConfig(name='default', min_size=32,
                               description='72x72, 300 / 50.'),
      SyntheticTaskonomyConfig(name='tiny', min_size=32, image_size=40,
                               num_train=16, num_test=8,
                               description='40x40, 16 / 8.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return taskonomy.dataset_info(
        self, description='Generated Taskonomy-like scenes (see '
        'data/synthetic_translation.py) where RGB needs both the shading '
        'and the texture edges.')

  def _split_generators(self, dl_manager):
    root = generated_folder(dl_manager.download_dir, self.builder_config)
    return taskonomy.split_generators(root, self.builder_config, self.info,
                                      self._generate_examples)

  def _generate_examples(self, root, entries, domains):
    yield from taskonomy.generate_examples(root, entries, domains,
                                           self.builder_config.min_size)
