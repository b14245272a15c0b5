r"""Multimodal multitask CEN on NYUv2: RGB + depth -> semseg + normals.

Four streams, every (input, task) pair of {rgb, depth} x {semseg, normals},
share every conv; each has its own BNs and exchanges with the other three;
each task's two streams are combined by its alpha-ensemble. The project's
reading of the TPAMI paper's multimodal multitask scenario (README,
"Multitask").

  python main.py --config=configs/nyud_multimodal_multitask.py \
    --workdir=runs/mmtl --config.data.data_dir=~/tensorflow_datasets \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth
"""

import ml_collections

from configs import nyud_multitask


def get_config():
  c = nyud_multitask.get_config()
  c.model.streams = (('rgb', 'semseg'), ('depth', 'semseg'),
                     ('rgb', 'normals'), ('depth', 'normals'))
  c.multitask.loss_weights = ml_collections.ConfigDict(
      {'semseg': 1.0, 'normals': 1.0})
  return c
