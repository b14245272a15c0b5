"""A small, deterministic, generated RGB-D segmentation set (no download).

Each image is a ray-cast room corner seen by a pinhole camera 1.1-1.5 m
above the floor, pitched 25-35 degrees down: a floor, a back wall and 3-5
objects standing on the floor. The seven classes are built so that neither
modality alone suffices:

==  ============  ==========================  ======================
id  name          colour                      geometry
==  ============  ==========================  ======================
0   floor         grey (the image's grey)     horizontal plane
1   wall          same grey                   vertical plane
2   red_tile      red                         flat, painted on floor
3   blue_tile     blue                        flat, painted on floor
4   grey_block    same grey                   raised box
5   grey_dome     same grey                   hemisphere
6   red_block     red                         raised box
==  ============  ==========================  ======================

RGB has no shading, so colour alone cannot separate 0/1/4/5 or 2/6; depth
alone cannot separate 0/2/3 or 4/6. A fused model can separate all seven.

Rendering uses 2x2 supersampling: RGB is the mean of the four samples, the
label is 255 (ignore) where the samples disagree (mixed boundary pixels),
and the depth is the top-left sample with Kinect-like noise
(sigma = 1.5 mm * z^2), quantised to uint16 metres x 5000 like NYUDv2, and
with a few holes (0 = missing). The ``hha`` feature is computed at build time
from that depth with ``data.hha`` and ``camera_matrix(image_size)``.

Configs: ``synthetic_rgbd`` (= ``/default``, 64x64, 200 train / 50 test,
about 5 s to build on 2 cores) and ``synthetic_rgbd/tiny`` (32x32, 16 / 8).

``data/synthetic_mtl.py`` renders the same scenes, shaded, with true depth
and the analytic surface normals of ``_ray_cast_normals``, for multi-task
learning.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data import conventions
from data import folder
from data import hha as hha_lib

CLASS_NAMES = ('floor', 'wall', 'red_tile', 'blue_tile', 'grey_block',
               'grey_dome', 'red_block')
NUM_CLASSES = len(CLASS_NAMES)
FLOOR, WALL, RED_TILE, BLUE_TILE, GREY_BLOCK, GREY_DOME, RED_BLOCK = range(7)
_OBJECT_CLASSES = (RED_TILE, BLUE_TILE, GREY_BLOCK, GREY_DOME, RED_BLOCK)
_RED_CLASSES = (RED_TILE, RED_BLOCK)
_SUPERSAMPLE = 2
_FOCAL_PER_PIXEL = 0.875  # Focal length in units of the image size.
# World normals (y up) of the floor and of the back wall, facing the camera.
_FLOOR_NORMAL = np.array([0.0, 1.0, 0.0])
_WALL_NORMAL = np.array([0.0, 0.0, -1.0])


def camera_matrix(image_size: int) -> np.ndarray:
  """(3, 3) intrinsics of a square synthetic image, 1-based convention."""
  f = _FOCAL_PER_PIXEL * image_size
  c = image_size / 2 + 0.5
  return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


@dataclasses.dataclass(frozen=True)
class _Scene:
  """Camera pose, room and objects (world: y up, camera at x = z = 0)."""
  camera_height: float
  pitch: float  # Radians, downwards.
  wall_distance: float
  objects: tuple[tuple[int, float, float, float, float], ...]
  # (class, centre x, centre z, half size, height) per object.


def _sample_scene(rng: np.random.Generator) -> _Scene:
  objects = []
  for _ in range(rng.integers(3, 6)):
    for _ in range(20):  # Rejection sampling of non-overlapping footprints.
      cls = int(rng.choice(_OBJECT_CLASSES))
      x, z = rng.uniform(-1.1, 1.1), rng.uniform(1.5, 3.3)
      size = rng.uniform(0.2, 0.35)
      height = size if cls == GREY_DOME else rng.uniform(0.25, 0.45)
      if all(np.hypot(x - o[1], z - o[2]) > size + o[3] + 0.15
             for o in objects):
        objects.append((cls, x, z, size, height))
        break
  return _Scene(camera_height=rng.uniform(1.1, 1.5),
                pitch=np.radians(rng.uniform(25.0, 35.0)),
                wall_distance=rng.uniform(4.0, 5.5), objects=tuple(objects))


def camera_axes(pitch: float) -> np.ndarray:
  """(3, 3) camera axes in world coordinates, one per row.

  Rows: image-right x = (1, 0, 0), image-down y = (0, -cos p, -sin p),
  forward z = (0, -sin p, cos p) for the downward pitch p, so ``axes @ v``
  is a world vector v in camera coordinates (X right, Y down, Z forward).
  The world (x right, y up, z forward) is left-handed, so the determinant
  is -1; dot products and lengths are kept all the same.
  """
  s, c = np.sin(pitch), np.cos(pitch)
  return np.array([[1.0, 0.0, 0.0], [0.0, -c, -s], [0.0, -s, c]])


def _rays(image_size: int, pitch: float,
          supersample: int = _SUPERSAMPLE) -> np.ndarray:
  """(S, S, 3) world ray directions with unit camera-Z component.

  S = ``image_size * supersample``; ``supersample=1`` gives the rays
  through the pixel centres of ``camera_matrix(image_size)``.
  """
  k = camera_matrix(image_size)
  n = image_size * supersample
  # Sample centres in 1-based pixel coordinates of the output image.
  coords = 0.5 + (np.arange(n) + 0.5) / supersample
  dx = (coords[None, :] - k[0, 2]) / k[0, 0] + np.zeros((n, 1))
  dy = (coords[:, None] - k[1, 2]) / k[1, 1] + np.zeros((1, n))
  s, c = np.sin(pitch), np.cos(pitch)
  # Camera axes in the world: x = (1, 0, 0), image-down y = (0, -c, -s),
  # forward z = (0, -s, c).
  return np.stack([dx, -c * dy - s, -s * dy + c], axis=-1)


def _box_entry(origin, d, lo, hi) -> tuple[np.ndarray, np.ndarray]:
  """Ray-box entry distance (slab method) and the entry face's axis.

  Returns:
    The distance, inf where missed, and the axis (0, 1 or 2) of the face
    the ray enters through.
  """
  with np.errstate(divide='ignore', invalid='ignore'):
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (lo - origin) / safe, (hi - origin) / safe
  entries = np.minimum(t1, t2)
  near = entries.max(axis=-1)
  far = np.maximum(t1, t2).min(axis=-1)
  t = np.where((far >= near) & (near > 0), near, np.inf)
  return t, entries.argmax(axis=-1)


def _dome_hit(origin, d, centre, radius) -> np.ndarray:
  """Ray-hemisphere (upper half) distance, inf where missed."""
  oc = origin - centre
  a = np.sum(d * d, axis=-1)
  b = 2.0 * np.sum(d * oc, axis=-1)
  disc = b * b - 4.0 * a * (oc @ oc - radius * radius)
  t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
  above = origin[1] + t * d[..., 1] >= 0.0
  return np.where((disc >= 0) & (t > 0) & above, t, np.inf)


def _ray_cast(scene: _Scene, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Depth (camera Z, metres) and class of every ray."""
  depth, label, _ = _ray_cast_normals(scene, d)
  return depth, label


def _object_hit(origin, d, obj) -> tuple[np.ndarray, np.ndarray]:
  """Distance (inf where missed) and world normal of a box or dome hit."""
  cls, x, z, size, height = obj
  if cls == GREY_DOME:
    centre = np.array([x, 0.0, z])
    t = _dome_hit(origin, d, centre, size)
    finite = np.where(np.isfinite(t), t, 0.0)
    return t, (origin + finite[..., None] * d - centre) / size
  t, axis = _box_entry(origin, d, np.array([x - size, 0.0, z - size]),
                       np.array([x + size, height, z + size]))
  # The entry face faces against the ray along its axis.
  along = np.take_along_axis(d, axis[..., None], axis=-1)
  return t, -np.sign(along) * (np.arange(3) == axis[..., None])


def _ray_cast_normals(scene: _Scene, d: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Depth, class and surface normal of every ray.

  Args:
    scene: the room and objects.
    d: (..., 3) world ray directions with unit camera-Z component (as
      ``_rays`` makes them).

  Returns:
    ``depth`` (...) camera Z in metres, ``label`` (...) class ids and
    ``normal`` (..., 3) the analytic unit normal of the surface hit, in
    world coordinates (y up) and facing the ray's origin: floor and tiles
    (0, 1, 0), back wall (0, 0, -1), a box's entry face, a dome's
    (p - centre) / radius.
  """
  origin = np.array([0.0, scene.camera_height, 0.0])
  with np.errstate(divide='ignore'):
    t_floor = np.where(d[..., 1] < 0, origin[1] / -d[..., 1], np.inf)
    t_wall = np.where(d[..., 2] > 0, scene.wall_distance / d[..., 2], np.inf)
  depth = np.minimum(t_floor, t_wall)
  label = np.where(t_floor <= t_wall, FLOOR, WALL)
  normal = np.where((t_floor <= t_wall)[..., None], _FLOOR_NORMAL,
                    _WALL_NORMAL)
  hit = origin + t_floor[..., None] * d
  for obj in scene.objects:
    cls, x, z, size, _ = obj
    if cls in (RED_TILE, BLUE_TILE):
      inside = (np.abs(hit[..., 0] - x) <= size) & (
          np.abs(hit[..., 2] - z) <= size) & (label == FLOOR)
      label = np.where(inside, cls, label)
      continue
    t, obj_normal = _object_hit(origin, d, obj)
    closer = t < depth
    depth, label = np.where(closer, t, depth), np.where(closer, cls, label)
    normal = np.where(closer[..., None], obj_normal, normal)
  return depth, label, normal


def _albedo(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(..., 3) flat colour per class in 0..255, drawn per scene."""
  grey = rng.uniform(95.0, 165.0)
  red = np.array([190.0, 50.0, 45.0]) + rng.uniform(-15, 15, 3)
  blue = np.array([50.0, 70.0, 190.0]) + rng.uniform(-15, 15, 3)
  rgb = np.full(label.shape + (3,), grey)
  rgb[np.isin(label, _RED_CLASSES)] = red
  rgb[label == BLUE_TILE] = blue
  return rgb


def _colour_noise(shape: tuple[int, ...],
                  rng: np.random.Generator) -> np.ndarray:
  """Per-sample colour noise in 0..255 units."""
  return rng.normal(0.0, 8.0, shape)


def _colours(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Flat albedo per class (no shading) plus per-sample noise."""
  rgb = _albedo(label, rng)
  return rgb + _colour_noise(rgb.shape, rng)


def _sensor_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Noisy uint16 metres x 5000 depth with a few holes."""
  noisy = depth + rng.normal(0.0, 1.0, depth.shape) * 0.0015 * depth ** 2
  stored = np.round(np.clip(noisy, 0.0, 10.0) * conventions.DEPTH_SCALE)
  stored = stored.astype(np.uint16)
  stored[_holes(depth.shape[0], rng)] = 0
  return stored


def _holes(size: int, rng: np.random.Generator) -> np.ndarray:
  """(size, size) bool: 0-2 elliptic blobs and 0.5 % single pixels."""
  holes = np.zeros((size, size), bool)
  yy, xx = np.mgrid[:size, :size]
  for _ in range(rng.integers(0, 3)):
    cy, cx = rng.uniform(0, size, 2)
    ry, rx = rng.uniform(1.0, size / 12, 2)
    holes |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
  return holes | (rng.random((size, size)) < 0.005)


def render(image_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Renders one scene.

  Args:
    image_size: output height = width.
    rng: the scene's random generator.

  Returns:
    ``rgb`` (S, S, 3) uint8, ``depth`` (S, S) uint16 metres x 5000,
    ``label`` (S, S) uint8 in 0..6 and 255.
  """
  scene = _sample_scene(rng)
  depth, label = _ray_cast(scene, _rays(image_size, scene.pitch))
  rgb = _colours(label, rng)
  n, k = image_size, _SUPERSAMPLE
  rgb = rgb.reshape(n, k, n, k, 3).mean(axis=(1, 3))
  return {
      'rgb': np.clip(np.round(rgb), 0, 255).astype(np.uint8),
      'depth': _sensor_depth(depth[::k, ::k], rng),
      'label': _pixel_labels(label, image_size),
  }


def _pixel_labels(label: np.ndarray, image_size: int) -> np.ndarray:
  """(S, S) uint8 labels from the supersampled ones, 255 where they differ."""
  n, k = image_size, _SUPERSAMPLE
  blocks = label.reshape(n, k, n, k).transpose(0, 2, 1, 3).reshape(n, n, -1)
  pure = np.all(blocks == blocks[..., :1], axis=-1)
  out_label = np.where(pure, blocks[..., 0], conventions.IGNORE_LABEL)
  return out_label.astype(np.uint8)


@dataclasses.dataclass(eq=False)
class SyntheticRgbdConfig(tfds.core.BuilderConfig):
  """Attributes: image size, split sizes and the generator seed."""
  image_size: int = 64
  num_train: int = 200
  num_test: int = 50
  seed: int = 0


class SyntheticRgbd(tfds.core.GeneratorBasedBuilder):
  """Generated RGB-D scenes where only fusing RGB and depth segments all."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticRgbdConfig(name='default', description='64x64, 200 / 50.'),
      SyntheticRgbdConfig(name='tiny', image_size=32, num_train=16,
                          num_test=8, description='32x32, 16 / 8.'),
  ]

  def _layout(self) -> folder.Layout:
    return folder.Layout(class_names=CLASS_NAMES, hha=True)

  def _info(self) -> tfds.core.DatasetInfo:
    return folder.dataset_info(
        self, self._layout(),
        description='Generated room-corner RGB-D scenes (see '
        'data/synthetic_rgbd.py); some classes differ only in colour, '
        'others only in geometry.')

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated locally.
    config = self.builder_config
    return {'train': self._generate_examples(0, config.num_train),
            'test': self._generate_examples(1, config.num_test)}

  def _generate_examples(self, split_id, count):
    config = self.builder_config
    k = camera_matrix(config.image_size)
    for i in range(count):
      rng = np.random.default_rng([config.seed, split_id, i])
      example = render(config.image_size, rng)
      depth_m = example['depth'] / conventions.DEPTH_SCALE
      name = f"{('train', 'test')[split_id]}_{i:05d}"
      example['hha'] = folder.encode_png(hha_lib.depth_to_hha(depth_m, k))
      example['rgb'] = folder.encode_png(example['rgb'])
      example['name'] = name
      yield name, example
