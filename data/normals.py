"""Surface normals derived from a depth map, for datasets that have none.

The official NYUDv2 layout (``nyud_v2``) stores RGB, depth and labels but no
normals. For the surface-normal task, this project fits them itself with
the plane fit of its HHA code (``data.hha.surface_normals``: least squares
in a 7x7 window of back-projected points, Gupta et al.'s formulation),
then orients them *towards* the camera, the convention of the NYUv2
multitask benchmark's normals. This is the project's own derivation, not a
published ground truth: where a dataset provides normals (``nyuv2_mtl``),
those are read instead.

Coordinates are the camera's: X right, Y down, Z forward (along the optical
axis); a wall facing the camera has normal (0, 0, -1).
"""

import numpy as np

from data import hha


def normals_from_depth(depth_m: np.ndarray,
                       camera_matrix: np.ndarray = hha.NYU_KINECT_K,
                       radius: int = hha._NORMAL_RADIUS,  # pylint: disable=protected-access
                       ) -> np.ndarray:
  """Unit normals (H, W, 3) float32 facing the camera; all-zero = missing.

  Args:
    depth_m: (H, W) depth along the optical axis in metres, 0 where missing.
    camera_matrix: (3, 3) intrinsics of this image (1-based pixel
      convention, as ``data.hha``); NYUDv2's Kinect by default.
    radius: half-width of the fitting window.

  Returns:
    Normals with ``n . p <= 0`` for the pixel's point p; zero vectors where
    the depth is missing or the window has too few points for a plane.
  """
  depth_m = np.asarray(depth_m, np.float64)
  if depth_m.ndim != 2:
    raise ValueError(f'depth must be (H, W), got shape {depth_m.shape}')
  valid = depth_m > 0
  points = hha.point_cloud(depth_m, camera_matrix)
  away = hha.surface_normals(points, valid, radius)
  ok = valid & np.all(np.isfinite(away), axis=-1)
  return np.where(ok[..., None], -away, 0.0).astype(np.float32)
