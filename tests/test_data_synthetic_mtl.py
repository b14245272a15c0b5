"""The generated synthetic_mtl set: geometry worked by hand, the build."""

import numpy as np
import pytest

import data
from data import normals as normals_lib
from data import nyuv2_mtl
from data import synthetic_mtl as mtl
from data import synthetic_rgbd as syn

_PITCH = np.pi / 6  # 30 degrees: cos = sqrt(3) / 2, sin = 1 / 2.
_SQRT3_2 = np.sqrt(3.0) / 2.0
# World (y up) -> camera (X right, Y down, Z forward) at 30 degrees pitch:
# the floor's up normal is (0, -cos, -sin), the wall's (0, 0, -1) is
# (0, sin, -cos).
_FLOOR_CAM = (0.0, -_SQRT3_2, -0.5)
_WALL_CAM = (0.0, 0.5, -_SQRT3_2)


def _scene(objects=()):
  return syn._Scene(camera_height=1.2, pitch=_PITCH, wall_distance=4.5,
                    objects=tuple(objects))


def _pixel_rays(size):
  """(S, S, 3) camera-frame rays (dx, dy, 1) through the pixel centres."""
  k = syn.camera_matrix(size)
  u = np.arange(1, size + 1)
  dx, dy = np.meshgrid((u - k[0, 2]) / k[0, 0], (u - k[1, 2]) / k[1, 1])
  return np.stack([dx, dy, np.ones_like(dx)], axis=-1)


def _world_points(example, scene):
  """Back-projects the depth to world points (camera at (0, h, 0))."""
  cam = example['depth'][..., None] * _pixel_rays(len(example['depth']))
  axes = syn.camera_axes(scene.pitch)
  return np.array([0.0, scene.camera_height, 0.0]) + cam @ axes


def test_camera_axes_are_those_of_the_rays():
  size, pitch = 16, 0.5
  axes = syn.camera_axes(pitch)
  np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-15)
  expected = _pixel_rays(size) @ axes  # dx * x + dy * y + 1 * z.
  np.testing.assert_allclose(syn._rays(size, pitch, supersample=1),
                             expected, atol=1e-15)


def test_floor_and_wall_normals_in_camera_coordinates():
  world = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
  np.testing.assert_allclose(mtl.to_camera(world, _PITCH),
                             [_FLOOR_CAM, _WALL_CAM], atol=1e-15)
  ex = mtl.render_scene(_scene(), 32, np.random.default_rng(0))
  has_normal = np.any(ex['normal'] != 0, axis=-1)
  for cls, normal in ((syn.FLOOR, _FLOOR_CAM), (syn.WALL, _WALL_CAM)):
    seen = has_normal & (ex['label'] == cls)
    assert seen.sum() > 100
    np.testing.assert_allclose(ex['normal'][seen],
                               np.broadcast_to(normal, (seen.sum(), 3)),
                               atol=1e-7)


def test_depth_of_floor_and_wall_pixels_worked_by_hand():
  # f = 28, c = 16.5. A point at camera depth Z on the ray (dx, dy, 1) is
  # Z (sin p + cos p dy) below the camera and Z (cos p - sin p dy) ahead.
  ex = mtl.render_scene(_scene(), 32, np.random.default_rng(0))
  # Row 27: v = 28, dy = 11.5 / 28; the floor is 1.2 m below:
  # Z = 1.2 / (0.5 + 0.8660254 * 0.4107143) = 1.2 / 0.8556926.
  row = ex['depth'][27]
  np.testing.assert_allclose(row[row > 0], 1.4023787, rtol=1e-6)
  assert (row > 0).sum() > 20
  # Row 0: v = 1, dy = -15.5 / 28; the wall is 4.5 m ahead:
  # Z = 4.5 / (0.8660254 + 0.5 * 0.5535714) = 4.5 / 1.1428111.
  row = ex['depth'][0]
  np.testing.assert_allclose(row[row > 0], 3.9376586, rtol=1e-6)
  assert (row > 0).sum() > 20


def test_shade_worked_by_hand():
  # LIGHT = (-2, 6, -3) / 7: n . l is 6/7 (floor), 3/7 (wall), 2/7 (-x face)
  # and -2/7 -> 0 (+x face); albedo * (0.35 + 0.65 n . l).
  albedo = np.array([140.0, 70.0, 210.0])
  normal = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0],
                     [1.0, 0.0, 0.0]])
  np.testing.assert_allclose(
      mtl.shade(albedo, normal),
      [[127.0, 63.5, 190.5],  # 6.35 / 7.
       [88.0, 44.0, 132.0],  # 4.4 / 7.
       [75.0, 37.5, 112.5],  # 3.75 / 7.
       [49.0, 24.5, 73.5]])  # 0.35, ambient only.


def test_rendered_colour_is_the_shaded_albedo():
  ex = mtl.render_scene(_scene(), 32, np.random.default_rng(0))
  grey = np.random.default_rng(0).uniform(95.0, 165.0)  # _albedo's draw.
  for cls, factor in ((syn.FLOOR, 6.35 / 7), (syn.WALL, 4.4 / 7)):
    pixels = ex['image'][ex['label'] == cls]
    # Noise: sigma 8 / 255 per sample, 4 samples a pixel, >= 100 pixels.
    np.testing.assert_allclose(pixels.mean(axis=0), grey * factor / 255.0,
                               atol=0.005)


def test_box_and_dome_normals_match_the_depth():
  box = (syn.GREY_BLOCK, 0.9, 2.5, 0.3, 0.4)
  dome = (syn.GREY_DOME, -0.5, 2.2, 0.3, 0.3)
  scene = _scene([box, dome])
  ex = mtl.render_scene(scene, 64, np.random.default_rng(0))
  points = _world_points(ex, scene)
  world_normal = ex['normal'] @ syn.camera_axes(_PITCH)
  valid = np.any(ex['normal'] != 0, axis=-1)
  on_dome = valid & (ex['label'] == syn.GREY_DOME)
  expected = (points[on_dome] - (-0.5, 0.0, 2.2)) / 0.3
  np.testing.assert_allclose(world_normal[on_dome], expected, atol=1e-5)
  on_box = valid & (ex['label'] == syn.GREY_BLOCK)
  # Front (z = 2.2), top (y = 0.4) and left (x = 0.6) faces are visible.
  faces = (((0, 0, -1), 2, 2.2), ((0, 1, 0), 1, 0.4), ((-1, 0, 0), 0, 0.6))
  for normal, axis, plane in faces:
    on_face = on_box & np.all(np.abs(world_normal - normal) < 1e-6, -1)
    assert on_face.sum() > 10
    np.testing.assert_allclose(points[on_face][:, axis], plane, atol=1e-5)
  assert on_box.sum() == sum(
      np.all(np.abs(world_normal[on_box] - n) < 1e-6, -1).sum()
      for n, _, _ in faces)


@pytest.mark.parametrize('index', [0, 1, 2])
def test_normals_are_unit_facing_the_camera_and_zero_where_missing(index):
  ex = mtl.render(32, np.random.default_rng([0, 0, index]))
  valid = np.any(ex['normal'] != 0, axis=-1)
  np.testing.assert_array_equal(valid,
                                (ex['depth'] > 0) & (ex['label'] != 255))
  np.testing.assert_allclose(np.linalg.norm(ex['normal'][valid], axis=-1),
                             1.0, atol=1e-6)
  facing = np.sum(ex['normal'] * _pixel_rays(32), axis=-1)
  assert facing[valid].max() < 0


def test_normals_agree_with_normals_fitted_to_the_depth():
  # data/normals.py fits planes to the back-projected depth in the same
  # camera convention: on smooth surfaces both agree.
  ex = mtl.render(32, np.random.default_rng([0, 0, 3]))
  fitted = normals_lib.normals_from_depth(ex['depth'],
                                          syn.camera_matrix(32))
  both = np.any(ex['normal'] != 0, -1) & np.any(fitted != 0, -1)
  cos = np.sum(ex['normal'][both] * fitted[both], axis=-1)
  assert np.median(cos) > np.cos(np.radians(1.0))


def test_same_scene_labels_and_holes_as_synthetic_rgbd():
  for index in range(3):
    ex = mtl.render(32, np.random.default_rng([0, 1, index]))
    ref = syn.render(32, np.random.default_rng([0, 1, index]))
    np.testing.assert_array_equal(ex['label'], ref['label'])
    np.testing.assert_array_equal(ex['depth'] == 0, ref['depth'] == 0)
    # The exact depth is within the sensor noise of synthetic_rgbd's.
    near = np.abs(ex['depth'] - ref['depth'] / 5000.0) < 0.2
    assert near[ex['depth'] > 0].mean() > 0.95


def test_render_is_deterministic_and_examples_differ():
  a = mtl.render(32, np.random.default_rng([0, 0, 5]))
  b = mtl.render(32, np.random.default_rng([0, 0, 5]))
  c = mtl.render(32, np.random.default_rng([0, 0, 6]))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a[key], c[key])


def test_tiny_builds_and_reads_back(tmp_path):
  builder = data.prepare('synthetic_mtl/tiny', data_dir=tmp_path)
  assert builder.builder_config.name == 'tiny'
  meta = builder.info.metadata
  assert meta.keys() == {'class_names', 'num_classes', 'ignore_label',
                         'missing'}
  assert meta['class_names'] == list(syn.CLASS_NAMES)
  assert (meta['num_classes'], meta['ignore_label']) == (7, 255)
  assert meta['missing'] == nyuv2_mtl.MISSING
  assert builder.info.features.keys() == nyuv2_mtl.features().keys()
  train = builder.as_data_source(split='train')
  test = builder.as_data_source(split='test')
  assert (len(train), len(test)) == (16, 8)
  dtypes = {'image': (np.float32, (32, 32, 3)),
            'label': (np.uint8, (32, 32)),
            'depth': (np.float32, (32, 32)),
            'normal': (np.float32, (32, 32, 3))}
  for i in range(len(train)):
    ex = train[i]
    for key, (dtype, shape) in dtypes.items():
      assert ex[key].dtype == dtype and ex[key].shape == shape, key
    assert ex['index'] == i and ex['name'] == f'train/{i}'.encode()
    assert 0.0 <= ex['image'].min() and ex['image'].max() <= 1.0
  expected = mtl.render(32, np.random.default_rng([0, 1, 7]))
  for key, value in expected.items():
    np.testing.assert_array_equal(test[7][key], value)
