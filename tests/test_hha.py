"""Known-answer tests of the HHA encoding on ray-cast planar scenes."""

import cv2
import numpy as np
import pytest

from data import hha
from tests import paths


def _room(cam_height=1.5, pitch_deg=30.0, wall=4.0, size=(120, 160),
          focal=120.0):
  """Floor + back wall seen by a pitched camera, exact depth per pixel.

  Returns:
    depth (H, W) metres, camera matrix, floor mask, height above floor (m),
    gravity (3,) in camera coordinates.
  """
  h, w = size
  k = np.array([[focal, 0, w / 2 + 0.5], [0, focal, h / 2 + 0.5], [0, 0, 1]])
  dy = (np.arange(1, h + 1)[:, None] - k[1, 2]) / focal + np.zeros((1, w))
  p = np.radians(pitch_deg)
  up = -np.sin(p) - np.cos(p) * dy  # World-up component of the ray.
  forward = np.cos(p) - np.sin(p) * dy
  t_floor = np.where(up < 0, cam_height / np.maximum(-up, 1e-9), np.inf)
  t_wall = np.where(forward > 0, wall / np.maximum(forward, 1e-9), np.inf)
  depth = np.minimum(t_floor, t_wall)  # Camera Z, the ray has unit Z.
  gravity = np.array([0.0, np.cos(p), np.sin(p)])
  return depth, k, t_floor < t_wall, cam_height + depth * up, gravity


def _interior(mask, radius):
  """Pixels whose (2r+1)^2 window lies inside ``mask`` and the image."""
  k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
  inner = cv2.erode(mask.astype(np.uint8), k, borderValue=0)
  return inner.astype(bool)


def test_point_cloud_uses_one_based_principal_point():
  k = np.array([[2.0, 0, 2.0], [0, 4.0, 1.0], [0, 0, 1]])
  pc = hha.point_cloud(np.full((2, 3), 2.0), k)
  # Pixel (row 0, col 0) is (u, v) = (1, 1): X = (1 - 2) * 2 / 2 = -1.
  np.testing.assert_allclose(pc[0, 0], [-1.0, 0.0, 2.0])
  np.testing.assert_allclose(pc[1, 2], [1.0, 0.5, 2.0])


def test_crop_camera_matrix_shifts_principal_point():
  k = hha.crop_camera_matrix(hha.NYU_KINECT_K, *hha.NYU_CROP_OFFSET)
  np.testing.assert_allclose(k[0, 2], 325.582449 - 7)
  np.testing.assert_allclose(k[1, 2], 253.736166 - 6)
  np.testing.assert_allclose(k[:2, :2], hha.NYU_KINECT_K[:2, :2])


def test_normals_of_a_tilted_plane_point_away_from_camera():
  depth, k, floor, _, gravity = _room(wall=50.0)
  pc = hha.point_cloud(depth * 100, k)
  n = hha.surface_normals(pc, np.ones(depth.shape, bool), 3)
  inner = _interior(floor, 3)
  # The floor normal (world down, away from the camera) equals gravity.
  np.testing.assert_allclose(n[inner], np.tile(gravity, (inner.sum(), 1)),
                             atol=1e-6)


def test_room_gravity_height_angle_and_disparity():
  depth, k, floor, height_m, gravity = _room()
  disparity, height, angle, g = hha.hha_channels(depth, k)
  assert np.degrees(np.arccos(np.clip(g @ gravity, -1, 1))) < 1.0
  floor_in, wall_in = _interior(floor, 10), _interior(~floor, 10)
  # Floor: height 0, normal along gravity; wall: normal at 90 degrees.
  np.testing.assert_allclose(height[floor_in], 0.0, atol=2.0)
  np.testing.assert_allclose(height[wall_in], 100 * height_m[wall_in],
                             atol=2.0)
  np.testing.assert_allclose(angle[floor_in], 0.0, atol=1.0)
  np.testing.assert_allclose(angle[wall_in], 90.0, atol=1.0)
  np.testing.assert_allclose(disparity, 31000 / np.maximum(100 * depth, 100))


def test_depth_to_hha_uint8_encoding():
  depth, k, floor, height_m, _ = _room()
  depth[:5, :5] = 0.0  # A hole.
  out = hha.depth_to_hha(depth, k)
  assert out.dtype == np.uint8 and out.shape == depth.shape + (3,)
  floor_in, wall_in = _interior(floor, 10), _interior(~floor, 10)
  expected_disp = np.clip(np.floor(31000 / np.maximum(100 * depth, 100)
                                   + 0.5), 0, 255)
  valid = depth > 0
  assert np.abs(out[..., 0][valid] - expected_disp[valid]).max() <= 1
  assert out[..., 1][floor_in].max() <= 2
  expected_h = np.clip(np.round(100 * height_m), 0, 255)
  assert np.abs(out[..., 1][wall_in] - expected_h[wall_in]).max() <= 2
  assert set(np.unique(out[..., 2][floor_in])) <= {38, 39}  # 0 deg + 38.
  assert set(np.unique(out[..., 2][wall_in])) <= {127, 128, 129}  # 90 + 38.
  np.testing.assert_array_equal(out[:5, :5], 0)  # Missing depth -> 0.


def test_low_camera_assumes_130cm():
  # The lowest point is only 50 cm below the camera, so Gupta's rule puts
  # the floor 130 cm below it: the floor's height channel reads 80.
  depth, k, floor, _, _ = _room(cam_height=0.5, wall=50.0)
  _, height, _, _ = hha.hha_channels(depth, k)
  np.testing.assert_allclose(height[_interior(floor, 10)], 80.0, atol=0.5)


def test_all_missing_depth_encodes_zero():
  out = hha.depth_to_hha(np.zeros((20, 30)))
  np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize('name', ['000433', '000464'])
def test_real_nyu_depth_gravity_points_down(name):
  path = paths.NYUD_SAMPLES / 'depth' / f'{name}.png'
  depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) / 5000.0
  _, height, _, g = hha.hha_channels(depth, hha.NYU_KINECT_K)
  # Kinect held roughly upright: gravity within 30 degrees of image-down.
  assert g[1] > np.cos(np.radians(30))
  out = hha.depth_to_hha(depth)
  np.testing.assert_array_equal(out[depth == 0], 0)
  # Something is near the floor: the lowest valid point has height 0.
  assert np.nanmin(height) == pytest.approx(0.0, abs=1e-6)
