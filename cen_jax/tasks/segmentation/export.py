"""Deployable artifacts: the model and its resize as serialized StableHLO.

:func:`export_inference` serializes the full-resolution inference function
(``inference.full_res_logits``: the model plus the official cv2-bicubic
resize of the logits to the input size) with ``jax.export``, lowered for
CPU, CUDA and TPU at once. With ``bake_variables=True`` (the default) the
variables are constants inside the module, so running it needs nothing but
JAX: ``load_export(path).call(x)``; the artifact then holds every weight
(4 bytes per parameter: about 1 MB for the tiny test model, about 470 MB for
ResNet-101 with K = 40). With ``bake_variables=False`` the artifact is small
and takes ``(variables, x)``; load the variables with
``checkpointing.load_variables`` (``--mode=export`` writes them beside the
artifact).

Shapes: the batch is symbolic unless given, but the image size must be
static. ``jax.export`` can trace the convolutions with a symbolic height and
width, but the model's decoder (bilinear ``align_corners=True``) and the
final cv2-bicubic resize are interpolation matrices built in NumPy from the
concrete sizes (``resize._linear_matrix``, ``resize._cubic_matrix_cv2``), and
NumPy cannot build an array of symbolic size. Export one artifact per image
size (e.g. 480 x 640 for NYUDv2 frames), or pad inputs to a fixed size
(``inference.pad_to_multiple``) and crop the logits.
"""

import functools
import pathlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cen_jax.tasks.segmentation import inference

PLATFORMS = ('cpu', 'cuda', 'tpu')


def _input_spec(num_modalities: int, batch: int | None, height: int,
                width: int) -> jax.ShapeDtypeStruct:
  """float32 ``(M, B, H, W, 3)``, with ``B`` symbolic (``'b'``) if None."""
  b = 'b' if batch is None else str(batch)
  shape = jax.export.symbolic_shape(
      f'{num_modalities}, {b}, {height}, {width}, 3')
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def export_inference(model: nn.Module, variables: Any, *,
                     num_modalities: int, height: int, width: int,
                     batch: int | None = None, output: inference.Output = 'all',
                     scales: Sequence[float] = (1.0,), flip: bool = False,
                     bake_variables: bool = True,
                     platforms: Sequence[str] = PLATFORMS
                     ) -> jax.export.Exported:
  """Exports ``inputs -> full-resolution logits`` as serialized StableHLO.

  Args:
    model: the CEN module (``models.build``).
    variables: its variables (``params``, ``batch_stats``).
    num_modalities: M.
    height: static input height H (see the module docstring for why).
    width: static input width W.
    batch: static batch size, or None for a symbolic one.
    output: as for ``inference.full_res_logits``; ``'all'`` gives the M
      modalities then the ensemble.
    scales: test-time scales, as for ``inference.full_res_logits``.
    flip: mirror test-time augmentation.
    bake_variables: embed the variables as constants (the exported function
      takes ``x`` only) or take them as the first argument (``variables,
      x``).
    platforms: lowering platforms; the artifact runs on any of them.

  Returns:
    The ``jax.export.Exported``; calling it on float32 ``(M, B, H, W, 3)``
    normalised inputs gives float32 ``(B, H, W, K)`` logits, or
    ``(M + 1, B, H, W, K)`` for ``output='all'``.
  """
  infer = functools.partial(
      inference.full_res_logits, model.apply, out_size=(height, width),
      scales=tuple(scales), flip=flip, output=output)
  spec = _input_spec(num_modalities, batch, height, width)
  exporter = functools.partial(jax.export.export,
                               platforms=tuple(platforms))
  if bake_variables:
    return exporter(jax.jit(lambda x: infer(variables, x)))(spec)
  variables_spec = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
  return exporter(jax.jit(infer))(variables_spec, spec)


def save_export(path: str | pathlib.Path,
                exported: jax.export.Exported) -> None:
  """Writes ``exported.serialize()`` to ``path`` (parent folders created)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(exported.serialize())


def load_export(path: str | pathlib.Path) -> jax.export.Exported:
  """Reads an artifact written by :func:`save_export`.

  Call the result with ``.call(x)``, or ``.call(variables, x)`` when the
  variables were not baked in.
  """
  return jax.export.deserialize(bytearray(pathlib.Path(path).read_bytes()))
