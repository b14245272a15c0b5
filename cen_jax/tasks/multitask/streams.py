"""Streams: the (input modality, task) pairs that share one CEN core.

``config.model.streams`` lists them, e.g. ``(('rgb', 'semseg'), ('rgb',
'depth'), ('rgb', 'normals'))`` (multitask) or ``(('rgb', 'semseg'),
('depth', 'semseg'))`` (multimodal fusion, the segmentation network). Every
conv is shared by all S streams, every BN is private to one, the exchange
runs over all S, and each task has one output head. The tasks are taken in
their order of first appearance; so are the input modalities the loader
must provide.

A stream's input can also be another task's prediction, ``'pred:<task>'``
(``'pred:depth'``, ``'pred:normals'``): fusion with a predicted modality,
this project's reading of the TPAMI paper's "cycle" fusion. The streams
then run in two passes of the same shared convs: first the streams of the
predicted tasks (from real inputs), then the others, the predicted inputs
filled in from the first pass's ensembles (``multitask.core``). E.g.
``(('rgb', 'depth'), ('rgb', 'semseg'), ('pred:depth', 'semseg'))``
segments from RGB and the depth it predicts from RGB, so it runs on RGB
alone though trained with depth labels.
"""

import dataclasses
from typing import Iterable, Sequence

# The dense tasks a stream can predict: the head's output channels (None =
# config.model.num_classes) and what the output means.
TASK_KINDS = {
    'semseg': None,  # K logits, cross-entropy, mIoU.
    'depth': 1,  # metres, L1 on valid pixels.
    'normals': 3,  # a direction (normalised), cosine loss.
}
PREDICTED_PREFIX = 'pred:'
# The tasks whose prediction can be a stream's input, as its input format:
# depth in metres (as the data's 'depth' input), normals as unit vectors.
PREDICTABLE = ('depth', 'normals')
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
    input_index: the index into ``modalities`` of every stream's input,
      -1 for a predicted input.
    names: ``'<input>_<task>'`` per stream (identifiers: metric names;
      ``'pred_depth_semseg'`` for ``('pred:depth', 'semseg')``).
    predicted: per stream, the task whose prediction is its input, or None.
    passes: the stream indices of each pass: one pass of all streams, or
      (the streams of the predicted tasks, the others).
  """
  inputs: tuple[str, ...]
  tasks: tuple[str, ...]
  task_names: tuple[str, ...]
  modalities: tuple[str, ...]
  heads: tuple[tuple[str, int], ...]
  stream_heads: tuple[int, ...]
  input_index: tuple[int, ...]
  names: tuple[str, ...]
  predicted: tuple[str | None, ...]
  passes: tuple[tuple[int, ...], ...]

  def streams_of(self, task: str) -> tuple[str, ...]:
    """The names of ``task``'s streams, in stream order."""
    return tuple(n for n, t in zip(self.names, self.tasks) if t == task)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
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
    if inp.startswith(PREDICTED_PREFIX):
      source = inp[len(PREDICTED_PREFIX):]
      if source not in PREDICTABLE:
        raise ValueError(f'{where}: input {inp!r} in {tuple(entry)}: only '
                         f'the predictions of {PREDICTABLE} can be inputs')
      if source == task:
        raise ValueError(f'{where}: stream {tuple(entry)} predicts the task '
                         'its input comes from')
    elif inp not in available_inputs:
      raise ValueError(f'{where}: input {inp!r} in {tuple(entry)} is not '
                       f'provided by the data; it provides '
                       f'{tuple(available_inputs)} (or a prediction, '
                       f"'{PREDICTED_PREFIX}<task>' with task in "
                       f'{PREDICTABLE})')
    if (inp, task) in pairs:
      raise ValueError(f'{where}: stream {(inp, task)} appears twice')
    pairs.append((inp, task))
  inputs = tuple(p[0] for p in pairs)
  tasks = tuple(p[1] for p in pairs)
  predicted = tuple(i[len(PREDICTED_PREFIX):]
                    if i.startswith(PREDICTED_PREFIX) else None
                    for i in inputs)
  consumed = set(p for p in predicted if p)
  for (inp, task), p in zip(pairs, predicted):
    if p and task in consumed:
      raise ValueError(f'{where}: stream {(inp, task)} feeds on a '
                       f'prediction and is fed to another stream: chains '
                       'of predicted inputs are not supported')
  for task in sorted(consumed):
    if not any(t == task and p is None for t, p in zip(tasks, predicted)):
      raise ValueError(f"{where}: input 'pred:{task}' needs a stream that "
                       f'predicts {task!r} from a real input')
  task_names = _unique(tasks)
  modalities = _unique(i for i, p in zip(inputs, predicted) if p is None)
  heads = tuple((t, int(num_classes) if TASK_KINDS[t] is None
                 else TASK_KINDS[t]) for t in task_names)
  everything = tuple(range(len(pairs)))
  if consumed:
    first = tuple(s for s in everything if tasks[s] in consumed)
    passes = (first, tuple(s for s in everything if s not in first))
  else:
    passes = (everything,)
  return Streams(
      inputs=inputs, tasks=tasks, task_names=task_names,
      modalities=modalities, heads=heads,
      stream_heads=tuple(task_names.index(t) for t in tasks),
      input_index=tuple(-1 if p else modalities.index(i)
                        for i, p in zip(inputs, predicted)),
      names=tuple(f'{i.replace(":", "_")}_{t}' for i, t in pairs),
      predicted=predicted, passes=passes)
