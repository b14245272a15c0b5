"""HHA depth encoding (Gupta et al., ECCV 2014), vectorised NumPy.

HHA encodes a depth map as three 8-bit channels:

* channel 0, horizontal disparity: ``31000 / max(z_cm, 100)``;
* channel 1, height above the ground in centimetres;
* channel 2, angle between the local surface normal and the gravity
  direction, in degrees, plus 38 (``angle + 128 - 90``, Gupta's "slack").

The steps follow Gupta's ``saveHHA.m`` / ``processDepthImage.m``:

1. back-project the depth (centimetres) to a point cloud with the camera
   matrix;
2. fit a plane to the valid points in a square window around every pixel
   (least squares on ``a . (X/Z, Y/Z, 1) = 1/Z``, Gupta's
   ``computeNormalsSquareSupport``); window radius 3 for the angle channel,
   10 for the gravity estimate; normals point away from the camera;
3. estimate gravity iteratively (``getYDir``): starting from the camera's
   image-down axis, take normals within 45 degrees (then 15) of the current
   estimate as "floor-like" and those within 45 (then 15) degrees of
   perpendicular as "wall-like", and pick the unit vector most parallel to
   the former and most perpendicular to the latter (smallest eigenvector of
   ``W^T W - F^T F``), 5 iterations per threshold;
4. height: ``h = -(p . g)`` in cm, shifted so that the lowest valid point is
   at 0; if the lowest point is less than 90 cm below the camera, the
   camera is assumed to be 130 cm above the floor instead (Gupta's rule);
5. quantise like MATLAB's ``uint8``: round half away from zero, saturate
   to [0, 255]; NaN (no normal could be fitted) becomes 0.

Deviation, on purpose: Gupta encodes an inpainted depth and uses the raw
depth only to exclude missing points from the normal fits. Here only the
raw depth is available, so pixels with missing depth (0) are encoded as 0 in
all three channels instead of being filled.

Camera matrices use the NYU toolbox / MATLAB pixel convention: the centre of
the top-left pixel is (1, 1). ``NYU_KINECT_K`` is for the full 480x640 Kinect
frame; the CEN / Light-Weight-RefineNet 468x625 images are the crop
``[6:474, 7:632]`` of that frame (``NYU_CROP_OFFSET``), whose intrinsics are
``crop_camera_matrix(NYU_KINECT_K, *NYU_CROP_OFFSET)``.
"""

import numpy as np

# NYU Depth v2 colour camera (toolbox camera_params.m), 640x480 frame.
NYU_KINECT_K = np.array([[518.857901, 0.0, 325.582449],
                         [0.0, 519.469611, 253.736166],
                         [0.0, 0.0, 1.0]])
# (top, left) of the 468x625 CEN crop inside the 480x640 frame.
NYU_CROP_OFFSET = (6, 7)

_NORMAL_RADIUS = 3
_GRAVITY_RADIUS = 10
_GRAVITY_THRESHOLDS_DEG = (45.0, 15.0)
_GRAVITY_ITERATIONS = (5, 5)
_MIN_DEPTH_CM = 100.0
_LOWEST_POINT_MIN_CM = -90.0
_DEFAULT_CAMERA_HEIGHT_CM = 130.0


def crop_camera_matrix(camera_matrix: np.ndarray, top: int,
                       left: int) -> np.ndarray:
  """Intrinsics of the crop starting at row ``top``, column ``left``.

  Args:
    camera_matrix: (3, 3) intrinsics of the uncropped image.
    top: first row of the crop in the uncropped image.
    left: first column of the crop in the uncropped image.

  Returns:
    (3, 3) intrinsics with the principal point shifted by the offsets.
  """
  k = np.array(camera_matrix, np.float64)
  k[0, 2] -= left
  k[1, 2] -= top
  return k


def point_cloud(depth: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
  """Back-projects a depth map (any unit) to camera coordinates.

  Args:
    depth: (H, W) depth along the optical axis.
    camera_matrix: (3, 3) intrinsics, 1-based pixel convention.

  Returns:
    (H, W, 3) points (X right, Y down, Z forward) in the unit of ``depth``.
  """
  k = np.asarray(camera_matrix, np.float64)
  h, w = depth.shape
  u = np.arange(1, w + 1, dtype=np.float64)[None, :]
  v = np.arange(1, h + 1, dtype=np.float64)[:, None]
  z = depth.astype(np.float64)
  x = (u - k[0, 2]) * z / k[0, 0]
  y = (v - k[1, 2]) * z / k[1, 1]
  return np.stack([x, y, z], axis=-1)


def _box_sum(x: np.ndarray, radius: int) -> np.ndarray:
  """Sum over the (2r+1)^2 window of every pixel, zeros outside the image.

  Args:
    x: (H, W, C) array.
    radius: window radius r.

  Returns:
    (H, W, C) window sums (MATLAB ``filter2(ones, x)``).
  """
  h, w = x.shape[:2]
  p = np.pad(x, ((radius + 1, radius), (radius + 1, radius), (0, 0)))
  c = p.cumsum(axis=0).cumsum(axis=1)
  d = 2 * radius + 1
  return (c[d:d + h, d:d + w] - c[:h, d:d + w] - c[d:d + h, :w]
          + c[:h, :w])


def surface_normals(points: np.ndarray, valid: np.ndarray,
                    radius: int) -> np.ndarray:
  """Unit normals from a least-squares plane fit in a square window.

  Args:
    points: (H, W, 3) camera-frame points.
    valid: (H, W) bool, False where the depth is missing.
    radius: window radius; the window is (2r+1) x (2r+1).

  Returns:
    (H, W, 3) unit normals pointing away from the camera (``n . p >= 0``);
    NaN where fewer than 3 valid points or a degenerate fit.
  """
  z = np.where(valid, points[..., 2], 1.0)
  xz = np.where(valid, points[..., 0] / z, 0.0)
  yz = np.where(valid, points[..., 1] / z, 0.0)
  one = valid.astype(np.float64)
  iz = one / z
  raw = np.stack([xz * xz, xz * yz, xz, yz * yz, yz, one,
                  xz * iz, yz * iz, iz], axis=-1)
  s = _box_sum(raw, radius)
  a11, a12, a13, a22, a23, a33, b1, b2, b3 = np.moveaxis(s, -1, 0)
  # Adjugate of the symmetric 3x3 normal matrix: n is proportional to
  # adj(A) b; the determinant only scales it, and is checked separately.
  c11 = a22 * a33 - a23 * a23
  c12 = a13 * a23 - a12 * a33
  c13 = a12 * a23 - a13 * a22
  c22 = a11 * a33 - a13 * a13
  c23 = a12 * a13 - a11 * a23
  c33 = a11 * a22 - a12 * a12
  det = a11 * c11 + a12 * c12 + a13 * c13
  n = np.stack([c11 * b1 + c12 * b2 + c13 * b3,
                c12 * b1 + c22 * b2 + c23 * b3,
                c13 * b1 + c23 * b2 + c33 * b3], axis=-1)
  norm = np.linalg.norm(n, axis=-1, keepdims=True)
  ok = (a33 >= 3) & (np.abs(det) > 1e-12 * np.maximum(a33, 1.0) ** 3)
  ok &= norm[..., 0] > 0
  n = n / np.where(norm > 0, norm, 1.0)
  # Orient away from the camera; where the pixel itself has no point,
  # fall back to a positive Z component (Gupta's first orientation step).
  facing = np.sum(n * points, axis=-1)
  facing = np.where(np.abs(facing) > 0, facing, n[..., 2])
  n = n * np.where(facing < 0, -1.0, 1.0)[..., None]
  return np.where(ok[..., None], n, np.nan)


def gravity_direction(normals: np.ndarray) -> np.ndarray:
  """Gupta's iterative gravity estimate from a normal field.

  Args:
    normals: (H, W, 3) unit normals, NaN where undefined.

  Returns:
    (3,) unit gravity (downward) direction in camera coordinates; the
    image-down axis (0, 1, 0) when no normal is close to it.
  """
  nn = normals.reshape(-1, 3)
  nn = nn[~np.isnan(nn[:, 0])]
  y = np.array([0.0, 1.0, 0.0])
  for thresh, iters in zip(_GRAVITY_THRESHOLDS_DEG, _GRAVITY_ITERATIONS):
    cos_t, sin_t = np.cos(np.radians(thresh)), np.sin(np.radians(thresh))
    for _ in range(iters):
      sim = np.abs(nn @ y)
      floor, wall = nn[sim > cos_t], nn[sim < sin_t]
      if not len(floor) and not len(wall):
        return y
      a = wall.T @ wall - floor.T @ floor
      _, vecs = np.linalg.eigh(a)
      new_y = vecs[:, 0]
      y = new_y * (1.0 if new_y @ y >= 0 else -1.0)
  return y


def hha_channels(depth_m: np.ndarray, camera_matrix: np.ndarray = NYU_KINECT_K
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Unquantised HHA channels.

  Args:
    depth_m: (H, W) depth in metres, 0 where missing.
    camera_matrix: (3, 3) intrinsics for this image (1-based convention).

  Returns:
    ``(disparity, height_cm, angle_deg, gravity)``: three (H, W) float
    arrays (NaN where missing or where no normal could be fitted) and the
    (3,) estimated gravity direction in camera coordinates.
  """
  valid = depth_m > 0
  pc = point_cloud(np.asarray(depth_m, np.float64) * 100.0, camera_matrix)
  gravity = gravity_direction(surface_normals(pc, valid, _GRAVITY_RADIUS))
  normals = surface_normals(pc, valid, _NORMAL_RADIUS)
  cos_angle = np.clip(normals @ gravity, -1.0, 1.0)
  angle = np.degrees(np.arccos(cos_angle))
  height = -(pc @ gravity)
  lowest = height[valid].min() if valid.any() else 0.0
  if lowest > _LOWEST_POINT_MIN_CM:
    lowest = -_DEFAULT_CAMERA_HEIGHT_CM
  height = height - lowest
  disparity = 31000.0 / np.maximum(pc[..., 2], _MIN_DEPTH_CM)
  nan = np.full_like(disparity, np.nan)
  return (np.where(valid, disparity, nan), np.where(valid, height, nan),
          np.where(valid, angle, nan), gravity)


def _matlab_uint8(x: np.ndarray) -> np.ndarray:
  """MATLAB ``uint8``: round half away from zero, saturate, NaN -> 0."""
  x = np.where(np.isnan(x), 0.0, x)
  return np.clip(np.floor(np.abs(x) + 0.5) * np.sign(x), 0, 255).astype(
      np.uint8)


def depth_to_hha(depth_m: np.ndarray,
                 camera_matrix: np.ndarray = NYU_KINECT_K) -> np.ndarray:
  """Encodes a metric depth map as HHA.

  Args:
    depth_m: (H, W) depth in metres, 0 where missing (e.g. the stored
      uint16 NYUDv2 depth divided by 5000).
    camera_matrix: (3, 3) intrinsics of this image, 1-based pixel
      convention; the default is the full 480x640 NYU Kinect frame. For the
      468x625 crop pass ``crop_camera_matrix(NYU_KINECT_K,
      *NYU_CROP_OFFSET)``.

  Returns:
    (H, W, 3) uint8: disparity, height above ground (cm), angle with
    gravity + 38 (degrees); 0 in every channel where the depth is missing.
  """
  disparity, height, angle, _ = hha_channels(depth_m, camera_matrix)
  return np.stack([_matlab_uint8(disparity), _matlab_uint8(height),
                   _matlab_uint8(angle + 38.0)], axis=-1)
