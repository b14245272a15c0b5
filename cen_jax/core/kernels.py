"""Backend-specific formulations of convs', max-pools' and residuals' work.

Profiling the whole ResNet-101 CEN train step on XLA:CPU
(``benchmarks/vs_official.py`` prints the breakdown) showed three slow spots:

* the *weight gradient* of a convolution: XLA puts a layout transpose of the
  input activation in front of every weight-gradient convolution and, along
  ResNet's residual chain, fuses the whole chain of BN + add + ReLU of a
  stage into that transpose, recomputing it for every consumer (7-11 of
  the step's op-seconds). Written as one ``(D, P) @ (P, kh*kw*C)`` matmul
  of the output gradient, transposed once, with the input's windows laid
  side by side (im2col), the activations are read in their natural layout
  and nothing is recomputed;
* the gradient of a max-pool goes through ``select_and_scatter``: 0.62 s
  for one of the RefineNet CRP blocks' 5x5 stride-1 pools at 240x320,
  against 0.08 s for two separable shifted maxima;
* a residual block's output ``relu(y + x)``: XLA:CPU fuses it, and the
  blocks before it, into every one of its consumers, so stage 3 of
  ResNet-101 (23 blocks) recomputed its BN + add + ReLU chain quadratically
  (``add_relu``; 0.65 s of a 7.3-8.0 s step).

A fourth is the library behind XLA:CPU's convolutions. XLA hands large
ones to YNNPACK by default; its Eigen convolutions were faster in both
directions on a 2-core AMD EPYC (ResNet-101 train step 16.0 s against
17.9 s, eval 5.4 s against 6.1 s, A/B alternating in one process), so
``'cpu'`` kernels also come with :func:`compiler_options` that keep
YNNPACK for matmuls only; the tasks pass them to the train and eval steps'
``jax.jit``.

``'cpu'`` kernels replace exactly these gradients and that ReLU, keeping
the forward pass (``lax.conv_general_dilated``, XLA's convolution) and the
input gradient (XLA's transposed convolution) as they are; ``'xla'``
kernels are the plain formulation XLA differentiates itself. ``'auto'``
picks ``'cpu'`` when JAX's default backend is the CPU and ``'xla'`` on GPU
and TPU, where XLA's own gradients are fast (cuDNN, the TPU's convolution
units). Both produce the same numbers up to float summation order
(tests/test_kernels.py checks this on the CPU), and the max-pool
gradients are identical, including ties: the gradient of each window goes
to its first maximum in row-major order, which is what XLA's
``select_and_scatter`` (with ``>=``) and PyTorch's max-pool do.
"""

import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

KERNELS = ('auto', 'xla', 'cpu')
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def resolve(kernels: str) -> str:
  """``'xla'`` or ``'cpu'``: what ``kernels`` means on the default backend."""
  if kernels not in KERNELS:
    raise ValueError(
        f'config.model.kernels must be one of {KERNELS}, got {kernels!r}')
  if kernels == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  return kernels


# The XLA:CPU option that picks which ops YNNPACK library fusions take; its
# values are DebugOptions enum names, comma-separated.
YNN_FUSION_TYPE = 'xla_cpu_experimental_ynn_fusion_type'
# Dots only, which leaves convolutions to XLA's own (Eigen) emitter.
_YNN_DOTS_ONLY = {YNN_FUSION_TYPE: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}


def compiler_options(kernels: str) -> dict[str, str] | None:
  """XLA options for programs of a model built with ``kernels``.

  ``'cpu'`` (on the CPU backend): convolutions by XLA's Eigen emitter, not
  YNNPACK (see the module docstring for the measurement); matmuls stay with
  YNNPACK. Anything else: None, XLA's defaults. The options change which
  library computes a convolution, not its definition: results agree up to
  float summation order (tests/test_kernels.py).
  """
  if resolve(kernels) == 'cpu' and jax.default_backend() == 'cpu':
    return dict(_YNN_DOTS_ONLY)
  return None


@jax.custom_vjp
def _add_relu_kept(y, x):
  return jnp.maximum(y, -x) + x


def _add_relu_kept_fwd(y, x):
  out = _add_relu_kept(y, x)
  return out, out


def _add_relu_kept_bwd(out, g):
  dy = jnp.where(out > 0, g, jnp.zeros_like(g))
  return dy, dy


_add_relu_kept.defvjp(_add_relu_kept_fwd, _add_relu_kept_bwd)


def add_relu(y: jnp.ndarray, x: jnp.ndarray, kernels: str) -> jnp.ndarray:
  """``relu(y + x)``, a residual block's output, computed once on the CPU.

  XLA:CPU may duplicate an elementwise producer into each of its consumers
  when the producer's last op is effectively unary, as ``relu`` is. Along
  ResNet's residual chain that fuses the BN + add + ReLU of blocks 1..k into
  every consumer of block k's output (its next residual add, the weight
  gradient of the next conv, the ReLU masks of the backward pass): the work
  grows with the square of the stage's depth (23 blocks in ResNet-101's
  stage 3). ``optimization_barrier`` does not stop it: the CPU compiler
  drops barriers before fusion.

  With ``'cpu'`` the output is ``max(y, -x) + x``, a binary op, which XLA
  keeps in memory for its consumers instead of duplicating it. It equals
  ``relu(y + x)`` (``y + x`` when ``y > -x``, else exactly 0; NaN and inf
  propagate alike), and the gradient is ReLU's, ``g`` where the output is
  positive and 0 elsewhere for both ``y`` and ``x`` (as ``jax.nn.relu``,
  whose gradient at 0 is 0), read from the kept output. ``'xla'``:
  ``jax.nn.relu(y + x)``.
  """
  if resolve(kernels) == 'cpu':
    return _add_relu_kept(y, x)
  return jax.nn.relu(y + x)


# ---------------------------------------------------------------------------
# Convolution: XLA forward and input gradient, im2col-matmul weight gradient.


def _conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding,
                                  dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_wgrad(x, w, strides, padding):
  return _conv(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _weight_grad(x, g, kernel_shape, strides, padding):
  """``dL/dw`` as one matmul of the output gradient with the input's columns.

  The gradient is transposed once, to ``(D, N*Ho*Wo)``, and the input's
  ``kh * kw`` (strided) windows are laid side by side into
  ``(N*Ho*Wo, kh*kw*C)`` columns, read in their natural channel-minor
  layout: transposing the input instead makes XLA:CPU copy the activations
  and, along ResNet's residual chain, recompute them inside the copy. One
  matmul over all taps keeps the CPU's cores busier than one per tap
  (``(D, P) @ (P, C)``), most of all at few channels or small images: the
  ResNet-101 step (batch 2, 240x320, 2 cores) went from 7.80 to 6.83 s,
  and to 6.80 from 7.15 s when the columns' concatenation became one
  fusion (below), A/B alternating in one process.
  """
  kh, kw = kernel_shape[:2]
  (pt, pb), (pl, pr) = padding
  sh, sw = strides
  n, ho, wo, d = g.shape
  c = x.shape[-1]
  g_t = jnp.transpose(g.reshape(n * ho * wo, d))
  matmul = functools.partial(jnp.dot, preferred_element_type=jnp.float32)
  if (kh, kw) == (1, 1) and padding == ((0, 0), (0, 0)):
    # A 1x1 conv: one matmul over the (strided) input pixels.
    window = x if (sh, sw) == (1, 1) else x[:, ::sh, ::sw, :][:, :ho, :wo]
    return jnp.transpose(matmul(g_t, window.reshape(-1, c)))[None, None]
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))

  def tap(i, j):  # The input window under kernel tap (i, j).
    return lax.slice(xp, (0, i, j, 0),
                     (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                     (1, sh, sw, 1))

  # (N, Ho, Wo, kh, kw, C), stacked in two levels on axes in front of C:
  # XLA:CPU fuses the windows into such a concatenation, which it does not
  # for one concatenation of more than 8 operands or along the minor axis
  # (every window would be copied out first, then copied again).
  columns = jnp.stack([jnp.stack([tap(i, j) for j in range(kw)], axis=3)
                       for i in range(kh)], axis=3)
  dw = matmul(g_t, columns.reshape(n * ho * wo, kh * kw * c))
  # (D, kh * kw * C) -> (kh, kw, C, D).
  return jnp.transpose(dw.reshape(d, kh, kw, c), (1, 2, 3, 0))


def _conv_bwd(strides, padding, res, g):
  x, w = res
  with jax.named_scope('conv_input_grad'):
    _, input_vjp = jax.vjp(lambda x_: _conv(x_, w, strides, padding), x)
    (dx,) = input_vjp(g)
  with jax.named_scope('conv_weight_grad'):
    dw = _weight_grad(x, g, w.shape, strides, padding).astype(w.dtype)
  return dx, dw


_conv_matmul_wgrad.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(kernels: str):
  """A drop-in for ``lax.conv_general_dilated`` (``nn.Conv``'s argument).

  With ``kernels`` resolving to ``'cpu'``, plain NHWC/HWIO convolutions
  (no dilation, one feature group, default precision, explicit padding) get
  the im2col-matmul weight gradient; anything else, and every conv with
  ``'xla'``, is ``lax.conv_general_dilated`` itself.
  """

  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
           precision=None, **kwargs):
    plain = (
        resolve(kernels) == 'cpu' and not kwargs and precision is None
        and feature_group_count == 1 and lhs.ndim == 4
        and all(d in (None, 1) for d in (lhs_dilation or ()))
        and all(d in (None, 1) for d in (rhs_dilation or ()))
        and not isinstance(padding, str)
        and _dims_are_nhwc(dimension_numbers, lhs.ndim)
        # Wide kernels on few channels (the 7x7 RGB stem) are many thin
        # matmuls: XLA's own gradient is faster there.
        and rhs.shape[0] * rhs.shape[1] <= 9 and rhs.shape[2] >= 16)
    if not plain:
      return lax.conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
          rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
          feature_group_count=feature_group_count, precision=precision,
          **kwargs)
    return _conv_matmul_wgrad(
        lhs, rhs, tuple(window_strides),
        tuple(tuple(int(p) for p in pair) for pair in padding))

  return conv


def _dims_are_nhwc(dimension_numbers: Any, ndim: int) -> bool:
  if dimension_numbers is None or ndim != 4:
    return False
  want = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
  have = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1),
                                    dimension_numbers)
  return have == want


# ---------------------------------------------------------------------------
# Max-pool: separable, with the gradient to each window's first maximum.


def _window_max_1d(x, axis, window, stride, pad):
  """Max over ``window`` along ``axis`` of x padded with -inf; + the taps."""
  widths = [(0, 0)] * x.ndim
  widths[axis] = (pad, pad)
  xp = jnp.pad(x, widths, constant_values=-jnp.inf)
  n_out = (xp.shape[axis] - window) // stride + 1
  taps = [lax.slice_in_dim(xp, k, k + stride * (n_out - 1) + 1, stride, axis)
          for k in range(window)]
  out = functools.reduce(jnp.maximum, taps)
  return out, taps, xp.shape


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_1d(x, axis, window, stride, pad):
  return _window_max_1d(x, axis, window, stride, pad)[0]


def _max_1d_fwd(x, axis, window, stride, pad):
  out = _window_max_1d(x, axis, window, stride, pad)[0]
  return out, (x, out)


def _max_1d_bwd(axis, window, stride, pad, res, g):
  x, out = res
  _, taps, padded_shape = _window_max_1d(x, axis, window, stride, pad)
  taken = jnp.zeros(out.shape, bool)
  n_out, zero = out.shape[axis], jnp.zeros((), g.dtype)
  dxp = None
  for k, tap in enumerate(taps):
    pick = (tap == out) & ~taken
    taken = taken | pick
    # Tap k read padded positions k, k + stride, ...: put its share back
    # there (interior padding spreads it by the stride).
    widths = [(0, 0, 0)] * x.ndim
    after = padded_shape[axis] - (k + stride * (n_out - 1) + 1)
    widths[axis] = (k, after, stride - 1)
    share = lax.pad(jnp.where(pick, g, zero), zero, widths)
    dxp = share if dxp is None else dxp + share
  dx = lax.slice_in_dim(dxp, pad, pad + x.shape[axis], 1, axis)
  return (dx,)


_max_1d.defvjp(_max_1d_fwd, _max_1d_bwd)


def max_pool(x: jnp.ndarray, window: int, stride: int, kernels: str,
             ) -> jnp.ndarray:
  """PyTorch's ``MaxPool2d(window, stride, padding=window // 2)`` of NHWC.

  ``'xla'``: ``reduce_window``, differentiated by ``select_and_scatter``.
  ``'cpu'``: the maximum over columns, then over rows, each a chain of
  shifted maxima whose gradient picks the first maximum of the window; the
  two stages compose to the first maximum in row-major order, so both
  forms give identical values and gradients.
  """
  pad = window // 2
  with jax.named_scope('max_pool'):
    if resolve(kernels) == 'xla':
      return lax.reduce_window(
          x, -jnp.inf, lax.max, (1, window, window, 1),
          (1, stride, stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    y = _max_1d(x, x.ndim - 2, window, stride, pad)
    return _max_1d(y, x.ndim - 3, window, stride, pad)

