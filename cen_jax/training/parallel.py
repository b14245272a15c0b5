"""Data parallelism: one ``'data'`` mesh axis over every device.

Parameters and optimiser state are replicated, batches are sharded on their
leading (example) axis, and ``jax.jit`` inserts the collectives. The same
code runs on one CPU, one GPU and every host of a TPU pod: each process
feeds its local share of the batch and
``jax.make_array_from_process_local_data`` assembles the global array.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'data'


def make_mesh(devices: Any = None) -> jax.sharding.Mesh:
  """A one-axis mesh over ``devices`` (default: all)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axis types: the step moves the modality axis in front of a sharded
  # batch axis, which Explicit sharding (make_mesh's default) rejects.
  return jax.make_mesh((len(devices),), (AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of the batch; the batch must split evenly."""
  count = jax.process_count()
  if global_batch_size % count:
    raise ValueError(f'batch size {global_batch_size} does not split over '
                     f'{count} processes')
  return global_batch_size // count


def check_divisible(batch_size: int, mesh: jax.sharding.Mesh,
                    what: str) -> None:
  if batch_size % mesh.size:
    raise ValueError(
        f'{what} {batch_size} must be a multiple of the {mesh.size} devices '
        'it is sharded over.')


def global_batch(batch: dict[str, np.ndarray],
                 mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Turns this process's numpy batch into global batch-sharded arrays."""
  sharding = batch_sharded(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
      for k, v in batch.items()
  }
