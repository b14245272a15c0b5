"""The stream core: one CEN over all streams, or two passes of its convs.

Without predicted inputs the core *is* ``segmentation.models.CEN`` with one
head per task. With them (``streams.PREDICTED_PREFIX``), the S streams are
split into passes (``Streams.passes``): pass 1 runs the streams of the
predicted tasks from real inputs; their tasks' ensembles, resized to the
input size (bilinear, ``align_corners=False``), become the inputs of the
``'pred:<task>'`` streams of pass 2, which runs the other streams. Each
pass is a CEN over its own streams: every conv is shared by both passes
(one set of weights), every stream keeps its own BNs, the exchange runs
over the streams of a pass, each task has its head in the pass of its
streams. The predicted input is a constant for pass 2 (gradient stopped),
as a real input is.

The variables are those of one S-stream network: per-stream BN leaves
``(S, ...)`` in stream order, the shared convs once, one head and one
ensemble per task (named ``clf_conv_<task>``, ``alpha_<task>``). A pass
reads its streams' rows (``subset``); its BN updates are written back to
those rows (``merge``).

``StreamCore`` offers what the task uses of a Flax module: ``init``,
``apply`` and ``exchange``.
"""

from typing import Any, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from cen_jax.core import resize
from cen_jax.tasks.multitask import losses
from cen_jax.tasks.multitask.streams import Streams
from cen_jax.tasks.segmentation import models

# The per-stream (private) norms of the encoder.
PER_STREAM_NORMS = ('bn1', 'bn2', 'bn3', 'downsample_bn')
_HEAD = 'clf_conv_'
_ALPHA = 'alpha_'


def is_per_stream(path: Sequence[str]) -> bool:
  """Whether a variable (path below its collection) has one row per stream."""
  return (len(path) > 1 and path[0] == 'encoder'
          and any(p in PER_STREAM_NORMS for p in path[1:]))


def _task_of(path: Sequence[str]) -> str | None:
  """The task of a head or ensemble variable, else None."""
  if path[0].startswith(_ALPHA):
    return path[0][len(_ALPHA):]
  if path[0] == 'decoder' and path[1].startswith(_HEAD):
    return path[1][len(_HEAD):]
  return None


def subset(variables: Any, streams: Sequence[int],
           tasks: Sequence[str]) -> Any:
  """The variables of a pass: rows ``streams`` of every per-stream leaf,
  the shared ones, and the heads and ensembles of ``tasks``."""
  index = np.asarray(streams)
  out = {}
  for path, leaf in flax.traverse_util.flatten_dict(variables).items():
    rest = path[1:]
    if is_per_stream(rest):
      out[path] = leaf[index]
    else:
      task = _task_of(rest)
      if task is None or task in tasks:
        out[path] = leaf
  return flax.traverse_util.unflatten_dict(out)


def merge(parts: Sequence[tuple[Sequence[int], Any]],
          num_streams: int) -> Any:
  """One S-stream tree from ``(streams, variables)`` of every pass.

  Per-stream rows go to their streams; anything else is taken from the
  first pass that has it (the shared convs are the same in every pass).
  """
  rows: dict[tuple, list[Any]] = {}
  out = {}
  for streams, variables in parts:
    for path, leaf in flax.traverse_util.flatten_dict(variables).items():
      if is_per_stream(path[1:]):
        buf = rows.setdefault(path, [None] * num_streams)
        for j, s in enumerate(streams):
          buf[s] = leaf[j]
      elif path not in out:
        out[path] = leaf
  for path, buf in rows.items():
    if any(b is None for b in buf):
      raise ValueError(f'no pass holds every stream of {"/".join(path)}')
    out[path] = jnp.stack(buf)
  return flax.traverse_util.unflatten_dict(out)


def as_input(task: str, ensemble: jnp.ndarray,
             size: tuple[int, int]) -> jnp.ndarray:
  """A ``(B, h, w, C)`` ensemble output as a ``(B, H, W, 3)`` input.

  Depth: metres, negative values clipped to 0, tiled to 3 channels (the
  data's depth input); normals: unit vectors. No gradient flows back.
  """
  x = resize.resize_bilinear(jax.lax.stop_gradient(ensemble), size,
                             align_corners=False)
  if task == 'depth':
    return jnp.repeat(jnp.maximum(x, 0.0), 3, axis=-1)
  if task == 'normals':
    return losses.unit(x)
  raise ValueError(f'task {task!r} cannot be an input')


class StreamCore:
  """The multitask network over ``Streams``, with a Flax module's calls.

  Attributes:
    streams: the parsed streams.
    models: one CEN per pass.
    exchange: the exchange variant (the same in every pass).
  """

  def __init__(self, model_config: Mapping[str, Any], streams: Streams):
    self.streams = streams
    s = streams
    if len(s.passes) == 1:
      self._tasks = (s.task_names,)
      self.models = (models.build(model_config, heads=s.heads,
                                  stream_heads=s.stream_heads),)
    else:
      self._tasks, built = [], []
      for p in s.passes:
        tasks = tuple(dict.fromkeys(s.tasks[i] for i in p))
        heads = tuple(h for h in s.heads if h[0] in tasks)
        self._tasks.append(tasks)
        built.append(models.build(
            model_config, heads=heads,
            stream_heads=tuple(tasks.index(s.tasks[i]) for i in p),
            suffix_heads=True))
      self._tasks, self.models = tuple(self._tasks), tuple(built)
    self.exchange = self.models[0].exchange

  # Equal and hashable by value, as a Flax module is, so that jitted
  # programs taking it as a static argument are shared by equal networks
  # (``cen_jax.core.programs``). The models follow from the streams and
  # the model config.
  def __eq__(self, other: Any) -> bool:
    return (isinstance(other, StreamCore) and
            (self.streams, self.models) == (other.streams, other.models))

  def __hash__(self) -> int:
    return hash((self.streams, self.models))

  def init(self, rng: jax.Array, x: jnp.ndarray, *, train: bool = False
           ) -> Any:
    """Variables of all streams; ``x`` is ``(S, B, H, W, 3)``."""
    if len(self.models) == 1:
      return self.models[0].init(rng, x, train=train)
    parts = []
    for k, (p, model) in enumerate(zip(self.streams.passes, self.models)):
      parts.append((p, model.init(jax.random.fold_in(rng, k),
                                  x[np.asarray(p)], train=train)))
    return merge(parts, len(self.streams.names))

  def apply(self, variables: Any, x: jnp.ndarray, *, train: bool = False,
            mutable: Any = False, rngs: Mapping[str, jax.Array] | None = None,
            **kwargs: Any) -> Any:
    """The model's outputs for ``(S, B, H, W, 3)`` stream inputs.

    The rows of predicted-input streams are ignored (filled from pass 1).
    Returns what ``CEN.apply`` returns: the output dict (``streams``,
    ``ensemble``, ``alpha``, each ``{task: ...}``), and the mutated
    collections when ``mutable`` is set.
    """
    if len(self.models) == 1:
      return self.models[0].apply(variables, x, train=train,
                                  mutable=mutable, rngs=rngs, **kwargs)
    s = self.streams
    size = x.shape[2:4]
    results, states = {}, []
    rows = list(x)
    for k, (p, model) in enumerate(zip(self.streams.passes, self.models)):
      for i in p:
        if s.predicted[i]:
          task = s.predicted[i]
          rows[i] = as_input(task, results['ensemble'][task], size)
      call_rngs = (None if rngs is None else
                   {n: jax.random.fold_in(r, k) for n, r in rngs.items()})
      out = model.apply(subset(variables, p, self._tasks[k]),
                        jnp.stack([rows[i] for i in p]), train=train,
                        mutable=mutable, rngs=call_rngs, **kwargs)
      if mutable:
        out, state = out
        states.append((p, state))
      for key in ('streams', 'ensemble', 'alpha'):
        results.setdefault(key, {}).update(out[key])
    results = {key: {t: results[key][t] for t in s.task_names}
               for key in ('streams', 'ensemble', 'alpha')}
    if mutable:
      return results, merge(states, len(s.names))
    return results
