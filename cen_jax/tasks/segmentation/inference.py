"""Full-resolution logits for evaluation and prediction.

The official evaluation (reference §6) runs the model once on the full,
unpadded image and resizes the 1/4-resolution logits to the label size with
OpenCV's bicubic kernel before the argmax. :func:`full_res_logits` does
exactly that for ``scales=(1.0,)`` and ``flip=False``, and adds the usual
test-time augmentation on top (not in the official code): each scale ``s``
resizes the inputs to ``scaled_size((H, W), s)`` with bilinear half-pixel
interpolation (``align_corners=False``, no antialiasing), optionally also
runs the horizontally mirrored input and mirrors its logits back, resizes
every pass's logits to the output size with the same cv2 bicubic resampler,
and averages the logits over all passes with equal weights. (Training
resizes depth with nearest neighbours; the bilinear input resize here also
blends missing depth, 0, into valid depth at the edges of holes.)

Padding. The network needs no padding: its stride-2 layers ceil-divide odd
sizes like PyTorch and the decoder resizes each level to the exact size of
the next skip, so any ``H x W`` gives logits of ``ceil(H/4) x ceil(W/4)``;
the official evaluation runs 468 x 625 images as they are. When ``H`` is not
a multiple of 4, though, the logit grid covers slightly more than the image
and the bicubic resize to ``(H, W)`` stretches it by a sub-pixel amount. For
prediction :func:`make_predict_fn` therefore pads the inputs at the bottom
and right to a multiple of the network stride (32) with zeros (in normalised
units: the ImageNet mean colour for RGB/HHA, missing depth for depth), so
every stage halves the size exactly and the logits are exactly ``1/4`` of
the padded size, resizes them to the padded size, where the half-pixel
grids of both resolutions coincide, and crops the original ``H x W`` back.
Bucketing sizes this way also bounds the number of compilations over a
folder of mixed sizes. Pixels near the bottom/right edge then see the
padding in their receptive field, so results differ slightly from the
unpadded protocol there; ``pad_multiple=None`` reproduces the official
protocol exactly.
"""

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cen_jax.core import resize

# Output stride of the ResNet encoder: sizes that are multiples of it give
# logits of exactly a quarter of the input size.
NETWORK_STRIDE = 32

ApplyFn = Callable[[Any, jnp.ndarray], dict[str, jnp.ndarray]]
Output = str | int


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
  """The input size of one test-time scale: ``floor(s * n + 0.5)``, >= 1."""
  return tuple(max(1, math.floor(n * scale + 0.5)) for n in size)


def select_output(outputs: dict[str, jnp.ndarray], output: Output,
                  modality_names: Sequence[str] | None = None
                  ) -> jnp.ndarray:
  """Picks logits from the model's output dict.

  Args:
    outputs: ``model.apply`` outputs: ``'modality_logits'`` ``(M, B, h, w,
      K)`` and ``'ensemble_logits'`` ``(B, h, w, K)``.
    output: ``'ensemble'``; ``'all'`` for the M modalities then the
      ensemble; a modality index; or a name from ``modality_names``.
    modality_names: names of the M modalities, in input order.

  Returns:
    ``(B, h, w, K)``, or ``(M + 1, B, h, w, K)`` for ``'all'``.

  Raises:
    ValueError: ``output`` names no output.
  """
  modality = outputs['modality_logits']
  if output == 'ensemble':
    return outputs['ensemble_logits']
  if output == 'all':
    return jnp.concatenate([modality, outputs['ensemble_logits'][None]], 0)
  names = tuple(modality_names or ())
  if isinstance(output, str) and output in names:
    output = names.index(output)
  if isinstance(output, (int, np.integer)) and 0 <= output < len(modality):
    return modality[int(output)]
  raise ValueError(
      f'Unknown output {output!r}; choose one of '
      f"{['ensemble', 'all', *names, *range(modality.shape[0])]}.")


def _flip(x: jnp.ndarray) -> jnp.ndarray:
  """Mirrors the width axis of a channels-last ``(..., H, W, C)`` array."""
  return jnp.flip(x, axis=-2)


def _pass_logits(apply_fn: ApplyFn, variables: Any, x: jnp.ndarray, *,
                 flip: bool, output: Output,
                 modality_names: Sequence[str] | None) -> jnp.ndarray:
  """Native-resolution logits of one scale, averaged with the mirror pass."""
  logits = select_output(apply_fn(variables, x), output, modality_names)
  if not flip:
    return logits
  mirrored = select_output(apply_fn(variables, _flip(x)), output,
                           modality_names)
  return (logits + _flip(mirrored)) / 2


def full_res_logits(apply_fn: ApplyFn, variables: Any, inputs: jnp.ndarray,
                    out_size: tuple[int, int], *,
                    scales: Sequence[float] = (1.0,), flip: bool = False,
                    output: Output = 'ensemble',
                    modality_names: Sequence[str] | None = None
                    ) -> jnp.ndarray:
  """Logits at ``out_size``, averaged over scales and optional mirroring.

  With ``scales=(1.0,)`` and ``flip=False`` this is the official protocol
  bit for bit: the model at the input size, then
  ``resize.resize_bicubic_cv2`` of the chosen logits to ``out_size``.
  Jit it with ``out_size``, ``scales``, ``flip``, ``output`` and
  ``modality_names`` static (hashable: tuples, not lists).

  Args:
    apply_fn: ``apply_fn(variables, x) -> outputs`` in inference mode, e.g.
      ``model.apply`` (whose ``train`` defaults to False).
    variables: the model variables.
    inputs: ``(M, B, H, W, 3)`` normalised float inputs.
    out_size: ``(H_out, W_out)``, usually the label size ``(H, W)``.
    scales: input scale factors; each pass runs at
      ``scaled_size((H, W), s)``, inputs resized by bilinear half-pixel
      interpolation (scale 1.0 leaves them untouched).
    flip: also run each scale mirrored horizontally (logits mirrored back).
    output: see :func:`select_output`.
    modality_names: names for ``output``, in input order.

  Returns:
    float32 ``(B, H_out, W_out, K)``, or ``(M + 1, B, H_out, W_out, K)`` for
    ``output='all'`` (the modalities, then the ensemble).
  """
  size = inputs.shape[-3:-1]
  total = None
  for s in scales:
    x = resize.resize_bilinear(inputs, scaled_size(size, s),
                               align_corners=False)
    logits = _pass_logits(apply_fn, variables, x, flip=flip, output=output,
                          modality_names=modality_names)
    logits = resize.resize_bicubic_cv2(logits, tuple(out_size))
    total = logits if total is None else total + logits
  if len(scales) == 1:
    return total
  return total / len(scales)


def model_logits_fn(model: Any, variables: Any, x: jnp.ndarray,
                    size: tuple[int, int], *,
                    scales: Sequence[float] = (1.0,),
                    flip: bool = False) -> jnp.ndarray:
  """``steps.eval_step``'s ``logits_fn`` with test-time augmentation.

  The signature of ``steps.full_res_logits`` (which it equals for
  ``scales=(1.0,)`` without flip), so evaluation can switch protocols by
  config: every output (the M modalities, then the ensemble) at ``size``,
  averaged over ``scales`` and, with ``flip``, the mirrored passes.

  Returns:
    float32 ``(M + 1, B, H, W, K)``.
  """
  return full_res_logits(model.apply, variables, x, tuple(size),
                         scales=tuple(scales), flip=flip, output='all')


def pad_to_multiple(inputs: np.ndarray | jnp.ndarray,
                    multiple: int = NETWORK_STRIDE, *, value: float = 0.0
                    ) -> tuple[Any, tuple[int, int]]:
  """Pads the bottom and right of ``(..., H, W, C)`` to a multiple.

  Padding only at the far sides keeps every original pixel at its
  coordinate, so the stride-2 sampling grid of the network and the
  half-pixel grid of the resamplers stay aligned with the unpadded image.

  Args:
    inputs: channels-last array, NumPy or JAX (the result has the same
      type).
    multiple: the padded height and width are the next multiples of this.
    value: the fill value (0 = mean colour / missing depth once
      normalised).

  Returns:
    ``(padded (..., H_p, W_p, C), (H, W))``, the original size for
    :func:`crop_to_size`.
  """
  h, w = inputs.shape[-3:-1]
  ph, pw = -h % multiple, -w % multiple
  widths = [(0, 0)] * (inputs.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
  lib = np if isinstance(inputs, np.ndarray) else jnp
  return lib.pad(inputs, widths, constant_values=value), (h, w)


def crop_to_size(x: Any, size: tuple[int, int]) -> Any:
  """The top-left ``size = (H, W)`` window of ``(..., H_p, W_p, C)``."""
  return x[..., :size[0], :size[1], :]


def make_predict_fn(apply_fn: ApplyFn, variables: Any, *,
                    scales: Sequence[float] = (1.0,), flip: bool = False,
                    output: Output = 'ensemble',
                    modality_names: Sequence[str] | None = None,
                    pad_multiple: int | None = NETWORK_STRIDE,
                    compiler_options: dict[str, Any] | None = None
                    ) -> Callable[[np.ndarray], np.ndarray]:
  """A jitted ``inputs -> full-resolution logits`` function for prediction.

  Inputs of any size are padded with :func:`pad_to_multiple` (unless
  ``pad_multiple`` is None), run through :func:`full_res_logits` with
  ``out_size`` = the padded size, and cropped back (see the module
  docstring). One compilation per padded size.

  Args:
    apply_fn: as for :func:`full_res_logits`.
    variables: the model variables (passed to the jitted function as an
      argument, not baked in as constants).
    scales: as for :func:`full_res_logits`.
    flip: as for :func:`full_res_logits`.
    output: as for :func:`full_res_logits`.
    modality_names: as for :func:`full_res_logits`.
    pad_multiple: pad to this multiple; None runs the official unpadded
      protocol.
    compiler_options: XLA options for ``jax.jit`` (the task's
      ``compiler_options``, ``core.kernels``).

  Returns:
    ``fn(inputs (M, B, H, W, 3)) -> (B, H, W, K)`` NumPy float32 logits
    (``(M + 1, B, H, W, K)`` for ``output='all'``).
  """
  static = dict(scales=tuple(scales), flip=flip, output=output,
                modality_names=None if modality_names is None
                else tuple(modality_names))
  run = jax.jit(functools.partial(full_res_logits, apply_fn, **static),
                static_argnames=('out_size',),
                compiler_options=compiler_options)

  def predict(inputs: np.ndarray) -> np.ndarray:
    inputs = np.asarray(inputs, np.float32)
    size = inputs.shape[-3:-1]
    if pad_multiple:
      inputs, size = pad_to_multiple(inputs, pad_multiple)
    logits = run(variables, inputs, out_size=tuple(inputs.shape[-3:-1]))
    return np.asarray(crop_to_size(logits, size))

  return predict
