"""A small, deterministic, generated multi-task set (no download).

The scenes of ``synthetic_rgbd`` (a ray-cast room corner with 3-5 objects
on the floor, the same seven classes), stored with the features of
``nyuv2_mtl`` so that the same multi-task input pipeline reads both:

* ``image``: float32 (H, W, 3) in [0, 1]. Unlike ``synthetic_rgbd`` the
  class colours are Lambertian-shaded, ``albedo * (0.35 + 0.65 *
  max(0, n . l))`` with the fixed world light direction ``LIGHT``, so
  geometry shows in RGB; 2x2 supersampled with the same per-sample noise;
* ``label``: uint8 (H, W), the class ids of ``synthetic_rgbd``, 255 (ignore)
  where the 2x2 samples of a pixel disagree;
* ``depth``: float32 (H, W), the exact ray-cast depth along the optical axis
  in metres at the pixel centre (no sensor noise), 0 in the holes of
  ``synthetic_rgbd``'s sensor model;
* ``normal``: float32 (H, W, 3), the analytic unit normal of the surface
  seen at the pixel centre (floor, wall, box face, dome), in camera
  coordinates: X right, Y down, Z forward (the convention of the NYUv2
  normals of MTAN and of ``data/normals.py``), facing the camera
  (``n . ray < 0``); all zero where the depth is a hole or the label is
  255;
* ``index``: int32, the example's number in its split;
* ``name``: text ``<split>/<i>``, e.g. ``train/12``.

Depth and normals belong to the pixel centres of
``synthetic_rgbd.camera_matrix(image_size)`` (1-based: pixel (r, c) is at
``u = c + 1, v = r + 1``), so back-projecting the depth with that matrix
gives points on the surfaces whose normals are stored. The world has y up;
the camera, ``camera_height`` above the floor at x = z = 0, is pitched down
by ``pitch``; ``synthetic_rgbd.camera_axes(pitch)`` turns world vectors
into camera coordinates. With pitch p the floor's normal is
(0, -cos p, -sin p) and the back wall's (0, sin p, -cos p).

The label comes from the pixel's four samples, depth and normal from the
ray through its centre; in rare pixels (about 1 in 10^5) the centre alone
sees a sliver of floor, narrower than half a pixel, between two objects,
and the depth and normal are the floor's under an object's label.

Example ``i`` of a split is drawn from ``np.random.default_rng([seed,
split_id, i])`` (train 0, test 1) with the random draws of
``synthetic_rgbd`` in the same order: it shows the same scene, with the same
labels, colours, noise and depth holes, as ``synthetic_rgbd``'s example
with the same seed, split and number.

``info.metadata`` mirrors ``nyuv2_mtl``: ``class_names``, ``num_classes``,
``ignore_label`` and ``missing``.

Configs: ``synthetic_mtl`` (= ``/default``, 64x64, 200 train / 50 test) and
``synthetic_mtl/tiny`` (32x32, 16 / 8).
"""

# This builder renders synthetic_rgbd's scenes and shares its private scene
# sampler, ray caster and noise models, so the two stay in step.
# pylint: disable=protected-access

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data import conventions
from data import nyuv2_mtl
from data import synthetic_rgbd as syn

CLASS_NAMES = syn.CLASS_NAMES
NUM_CLASSES = syn.NUM_CLASSES
# Unit direction towards the light in world coordinates (y up): above, to
# the left of and behind the camera, so floor, wall and the faces of a box
# are shaded differently.
LIGHT = np.array([-2.0, 6.0, -3.0]) / 7.0
AMBIENT = 0.35
DIFFUSE = 0.65


def shade(albedo: np.ndarray, normal: np.ndarray,
          light: np.ndarray = LIGHT) -> np.ndarray:
  """Lambertian shading, ``albedo * (AMBIENT + DIFFUSE * max(0, n . l))``.

  Args:
    albedo: (..., 3) colours.
    normal: (..., 3) unit surface normals, in the frame of ``light``.
    light: (3,) unit direction towards the light.

  Returns:
    (..., 3) shaded colours in the unit of ``albedo``.
  """
  lambert = np.maximum(np.asarray(normal) @ light, 0.0)
  return albedo * (AMBIENT + DIFFUSE * lambert)[..., None]


def to_camera(vectors: np.ndarray, pitch: float) -> np.ndarray:
  """World vectors (..., 3), y up, in camera coordinates.

  Args:
    vectors: (..., 3) world vectors.
    pitch: the camera's downward pitch in radians.

  Returns:
    (..., 3) the vectors along X right, Y down, Z forward.
  """
  return vectors @ syn.camera_axes(pitch).T


def render_scene(scene: syn._Scene, image_size: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Renders one given scene.

  Args:
    scene: the camera, room and objects.
    image_size: output height = width.
    rng: the scene's random generator, after ``scene`` was drawn from it;
      draws colours, their noise and the depth holes.

  Returns:
    ``image`` (S, S, 3) float32 in [0, 1], ``label`` (S, S) uint8,
    ``depth`` (S, S) float32 metres and ``normal`` (S, S, 3) float32 in
    camera coordinates, as described in the module docstring.
  """
  n, k = image_size, syn._SUPERSAMPLE
  _, samples, sample_normals = syn._ray_cast_normals(
      scene, syn._rays(n, scene.pitch))
  depth, _, normal = syn._ray_cast_normals(
      scene, syn._rays(n, scene.pitch, supersample=1))
  rgb = shade(syn._albedo(samples, rng), sample_normals)
  rgb = rgb + syn._colour_noise(rgb.shape, rng)
  image = rgb.reshape(n, k, n, k, 3).mean(axis=(1, 3)) / 255.0
  label = syn._pixel_labels(samples, n)
  # Draw (and drop) synthetic_rgbd's depth noise so that the holes are
  # those of its example from the same seed.
  rng.normal(0.0, 1.0, (n, n))
  holes = syn._holes(n, rng)
  has_normal = ~holes & (label != conventions.IGNORE_LABEL)
  return {
      'image': np.clip(image, 0.0, 1.0).astype(np.float32),
      'label': label,
      'depth': np.where(holes, 0.0, depth).astype(np.float32),
      'normal': np.where(has_normal[..., None],
                         to_camera(normal, scene.pitch),
                         0.0).astype(np.float32),
  }


def render(image_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Draws a scene from ``rng`` and renders it (see ``render_scene``)."""
  return render_scene(syn._sample_scene(rng), image_size, rng)


@dataclasses.dataclass(eq=False)
class SyntheticMtlConfig(tfds.core.BuilderConfig):
  """Attributes: image size, split sizes and the generator seed."""
  image_size: int = 64
  num_train: int = 200
  num_test: int = 50
  seed: int = 0


class SyntheticMtl(tfds.core.GeneratorBasedBuilder):
  """Generated scenes with labels, depth and normals, as ``nyuv2_mtl``."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticMtlConfig(name='default', description='64x64, 200 / 50.'),
      SyntheticMtlConfig(name='tiny', image_size=32, num_train=16,
                         num_test=8, description='32x32, 16 / 8.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    metadata = tfds.core.MetadataDict(
        class_names=list(CLASS_NAMES), num_classes=NUM_CLASSES,
        ignore_label=conventions.IGNORE_LABEL, missing=nyuv2_mtl.MISSING)
    return tfds.core.DatasetInfo(
        builder=self, features=nyuv2_mtl.features(), metadata=metadata,
        description='Generated room-corner scenes of synthetic_rgbd (see '
        'data/synthetic_mtl.py), shaded, with 7-class labels (255 = '
        'ignore), depth in metres and camera-frame surface normals.',
        # Keep index order, as nyuv2_mtl does.
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated locally.
    config = self.builder_config
    return {'train': self._generate_examples(0, config.num_train),
            'test': self._generate_examples(1, config.num_test)}

  def _generate_examples(self, split_id, count):
    config = self.builder_config
    split = ('train', 'test')[split_id]
    for i in range(count):
      rng = np.random.default_rng([config.seed, split_id, i])
      example = render(config.image_size, rng)
      example['index'] = np.int32(i)
      example['name'] = f'{split}/{i}'
      yield i, example
