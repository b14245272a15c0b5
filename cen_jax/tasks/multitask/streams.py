"""Streams: the (input modality, task) pairs that share one CEN core.

``config.model.streams`` lists them, e.g. ``(('rgb', 'semseg'), ('rgb',
'depth'), ('rgb', 'normals'))`` (multitask) or ``(('rgb', 'semseg'),
('depth', 'semseg'))`` (multimodal fusion, the segmentation network). Every
conv is shared by all S streams, every BN is private to one, the exchange
runs over all S, and each task has one output head. The tasks are taken in
their order of first appearance; so are the input modalities the loader
must provide.
"""

import dataclasses
from typing import Sequence

# The dense tasks a stream can predict: the head's output channels (None =
# config.model.num_classes) and what the output means.
TASK_KINDS = {
    'semseg': None,  # K logits, cross-entropy, mIoU.
    'depth': 1,  # metres, L1 on valid pixels.
    'normals': 3,  # a direction (normalised), cosine loss.
}
# Each task's metric that ranks checkpoints when no baselines are given,
# and its direction.
PRIMARY_METRIC = {
    'semseg': ('miou', 'max'),
    'depth': ('abs_err', 'min'),
    'normals': ('mean_angle', 'min'),
}
# The metrics that enter Delta_m, as LibMTL reports them on NYUv2.
DELTA_METRICS = {
    'semseg': ('miou', 'pixel_acc'),
    'depth': ('abs_err', 'abs_rel'),
    'normals': ('mean_angle', 'median_angle', 'within_11.25',
                'within_22.5', 'within_30'),
}


@dataclasses.dataclass(frozen=True)
class Streams:
  """The parsed stream layout.

  Attributes:
    inputs: the input modality of each stream.
    tasks: the task of each stream.
    task_names: the distinct tasks, in order of first appearance.
    modalities: the distinct inputs, in order of first appearance (the
      order of the loader's ``inputs`` axis).
    heads: ``((task, channels), ...)`` for ``CEN(heads=...)``.
    stream_heads: the head index of every stream.
    input_index: the index into ``modalities`` of every stream's input.
    names: ``'<input>_<task>'`` per stream (identifiers: metric names).
  """
  inputs: tuple[str, ...]
  tasks: tuple[str, ...]
  task_names: tuple[str, ...]
  modalities: tuple[str, ...]
  heads: tuple[tuple[str, int], ...]
  stream_heads: tuple[int, ...]
  input_index: tuple[int, ...]
  names: tuple[str, ...]

  def streams_of(self, task: str) -> tuple[str, ...]:
    """The names of ``task``'s streams, in stream order."""
    return tuple(n for n, t in zip(self.names, self.tasks) if t == task)


def _unique(items: Sequence[str]) -> tuple[str, ...]:
  return tuple(dict.fromkeys(items))


def parse(streams: Sequence[Sequence[str]], *, num_classes: int,
          available_inputs: Sequence[str]) -> Streams:
  """Checks ``config.model.streams`` and derives the model's heads.

  Args:
    streams: ``((input, task), ...)``.
    num_classes: the channels of a ``'semseg'`` head.
    available_inputs: the modalities the data provides.

  Raises:
    ValueError: no streams, a malformed entry, an unknown task, an input the
      data does not provide, or the same stream twice (each message names
      ``config.model.streams`` and the choices).
  """
  where = 'config.model.streams'
  if not streams:
    raise ValueError(f'{where} is empty: give at least one (input, task) '
                     'pair, e.g. ((\'rgb\', \'semseg\'),)')
  pairs = []
  for entry in streams:
    if isinstance(entry, str) or len(entry) != 2:
      raise ValueError(f'{where}: {entry!r} is not an (input, task) pair')
    inp, task = str(entry[0]), str(entry[1])
    if task not in TASK_KINDS:
      raise ValueError(f'{where}: unknown task {task!r} in {tuple(entry)}; '
                       f'choose one of {sorted(TASK_KINDS)}')
    if inp not in available_inputs:
      raise ValueError(f'{where}: input {inp!r} in {tuple(entry)} is not '
                       f'provided by the data; it provides '
                       f'{tuple(available_inputs)}')
    if (inp, task) in pairs:
      raise ValueError(f'{where}: stream {(inp, task)} appears twice')
    pairs.append((inp, task))
  inputs = tuple(p[0] for p in pairs)
  tasks = tuple(p[1] for p in pairs)
  task_names = _unique(tasks)
  modalities = _unique(inputs)
  heads = tuple((t, int(num_classes) if TASK_KINDS[t] is None
                 else TASK_KINDS[t]) for t in task_names)
  return Streams(
      inputs=inputs, tasks=tasks, task_names=task_names,
      modalities=modalities, heads=heads,
      stream_heads=tuple(task_names.index(t) for t in tasks),
      input_index=tuple(modalities.index(i) for i in inputs),
      names=tuple(f'{i}_{t}' for i, t in pairs))
