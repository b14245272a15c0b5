r"""Makes the README's translation picture from a trained quickstart workdir.

  python main.py --config=configs/translation_quickstart.py \
    --workdir=/tmp/cen_translation
  python -m docs.translation_figure --workdir=/tmp/cen_translation

Restores the workdir's best checkpoint (weights only, as ``--mode=eval``
does) and renders the first ``--examples`` test scenes of the synthetic
set, one row each: the two inputs (reshading, edge_texture), each branch's
output, the ensemble, and the target RGB, under the task's evaluation
protocol, with the same ``Translation.preview`` that TensorBoard shows.
Writes ``docs/translation_quickstart.png`` (3x nearest-neighbour upscale,
with column labels).
"""

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw

from cen_jax import tasks
from cen_jax.training import loop
from configs import translation_quickstart

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/cen_translation',
                               'A trained translation quickstart workdir.')
_OUT = flags.DEFINE_string('out', 'docs/translation_quickstart.png',
                           'Where to write the picture.')
_EXAMPLES = flags.DEFINE_integer('examples', 3, 'Test scenes shown.')
_SCALE = 3
_LABEL_HEIGHT = 18


def figure(task, variables, count: int) -> np.ndarray:
  """Rows of ``task.preview`` under a header naming every column."""
  source = task._eval_source  # pylint: disable=protected-access
  rows = [task.preview(variables, source[i]) for i in range(count)]
  grid = np.concatenate(rows, axis=0)
  grid = grid.repeat(_SCALE, axis=0).repeat(_SCALE, axis=1)
  labels = ([f'input: {d}' for d in task.inputs]
            + [f'branch {d}' for d in task.inputs]
            + ['ensemble', f'target: {task.target}'])
  width = grid.shape[1] // len(labels)
  header = Image.new('RGB', (grid.shape[1], _LABEL_HEIGHT), 'white')
  draw = ImageDraw.Draw(header)
  for i, label in enumerate(labels):
    draw.text((i * width + 4, 3), label, fill='black')
  return np.concatenate([np.asarray(header), grid], axis=0)


def main(argv):
  del argv
  config = translation_quickstart.get_config()
  task = tasks.build(config, _WORKDIR.value)
  variables, step = loop.restore_variables(task, _WORKDIR.value, 'best')
  Image.fromarray(figure(task, variables, _EXAMPLES.value)).save(_OUT.value)
  print(f'wrote {_OUT.value} from step {step} of {_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main)
