r"""Makes the README's prediction picture from the real NYUDv2 samples.

  python -m docs.prediction_figure --samples=../shared/data/nyud_samples

No trained NYUDv2 model can be had here (no ImageNet or CEN weights, no
dataset download), so this fits a small CEN to the two full RGB-D-label
samples (000433, 000464) with the ordinary tools: the samples are arranged
in the official layout, built with the ``nyud_v2`` TFDS builder, trained
with ``run.train_and_evaluate`` and segmented with ``run.predict``,
exactly as ``main.py --mode=predict`` does.
The picture therefore shows the outputs of predict (mask, colour mask,
overlay) on a real frame; the model has seen that frame in training, so it
says nothing about accuracy on unseen images.

Writes ``docs/prediction_000464.png`` (RGB | ground truth | prediction |
overlay, half size) and prints the run's final scores.
"""

import pathlib
import tempfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image

import data
from cen_jax import run
from cen_jax.tasks.segmentation import predict
from configs import quickstart

_SAMPLES = flags.DEFINE_string('samples', '../shared/data/nyud_samples',
                               'The nyud_samples folder.')
_OUT = flags.DEFINE_string('out', 'docs/prediction_000464.png',
                           'Where to write the picture.')
_STEPS = flags.DEFINE_integer('steps', 400, 'Training steps.')
NAMES = ('000433', '000464')
SHOWN = '000464'


def official_layout(samples: pathlib.Path, root: pathlib.Path) -> None:
  """Symlinks the full-frame samples into rgb/, depth/, masks/ + lists."""
  for kind, sub in (('rgb', 'rgb'), ('depth', 'depth'), ('label', 'masks')):
    (root / sub).mkdir(parents=True)
    for name in NAMES:
      (root / sub / f'{name}.png').symlink_to(
          (samples / kind / f'{name}.png').resolve())
  lines = '\n'.join(f'rgb/{n}.png\tmasks/{n}.png\tdepth/{n}.png'
                    for n in NAMES)
  (root / 'train.txt').write_text(lines)
  (root / 'val.txt').write_text(lines)


def config_for(data_dir: pathlib.Path, steps: int):
  c = quickstart.get_config()
  c.data.name = 'nyud_v2'
  c.data.data_dir = str(data_dir)
  c.model.num_classes = 40
  c.model.width = 16
  c.model.decoder_features = (48, 48)
  c.model.dropout_rate = 0.0
  c.data.crop_size = 256
  c.data.scale_range = (0.75, 1.25)
  c.data.shorter_side = 256
  c.optim.batch_size = 2
  # Batch 2 of 256 crops: 0.02 (the quickstart's) diverged at width 32.
  c.optim.encoder_lrs = (0.005,)
  c.optim.decoder_lrs = (0.005,)
  c.optim.warmup_epochs = 50  # 50 steps: one epoch is one step here.
  c.optim.stage_epochs = (steps,)
  c.train.eval_every_epochs = steps
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = steps
  c.eval.batch_size = 1
  return c


def main(argv):
  del argv
  samples = pathlib.Path(_SAMPLES.value)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    official_layout(samples, tmp / 'manual')
    data.prepare('nyud_v2', data_dir=tmp / 'tfds', manual_dir=tmp / 'manual')
    config = config_for(tmp / 'tfds', _STEPS.value)
    summary = run.train_and_evaluate(config, str(tmp / 'work'))
    print({k: round(v, 2) for k, v in summary.items() if '/iou/' not in k})
    src = tmp / 'predict_in'
    for sub in ('rgb', 'depth'):
      (src / sub).mkdir(parents=True)
      (src / sub / f'{SHOWN}.png').symlink_to(
          (samples / sub / f'{SHOWN}.png').resolve())
    (written,) = run.predict(config, str(tmp / 'work'), str(src),
                             str(tmp / 'out'))
    label = np.asarray(Image.open(samples / 'label' / f'{SHOWN}.png'))
    colors = np.concatenate([predict.palette(40), np.zeros((216, 3),
                                                           np.uint8)])
    panels = [np.asarray(Image.open(samples / 'rgb' / f'{SHOWN}.png')),
              colors[label],  # 255 (void) is black.
              np.asarray(Image.open(written.color)),
              np.asarray(Image.open(written.overlay))]
    gap = np.full((480, 8, 3), 255, np.uint8)
    strip = np.concatenate(sum([[p, gap] for p in panels], [])[:-1], axis=1)
    image = Image.fromarray(strip)
    image = image.resize((image.width // 2, image.height // 2),
                         Image.Resampling.LANCZOS)
    image.save(_OUT.value, optimize=True)
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
