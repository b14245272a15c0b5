r"""Fusion with a predicted modality on NYUv2: RGB + predicted depth -> semseg.

Three streams over one set of ResNet-101 RefineNet convs: (rgb, depth)
predicts depth from RGB in a first pass; (rgb, semseg) and (pred:depth,
semseg) then segment in a second pass, exchanging channels between the RGB
stream and the stream that reads the predicted depth, and are combined by
the semseg ensemble. Trained with depth *labels*, the model needs only RGB
at test time. "Cycle" fusion in this project's reading: the TPAMI paper's
definition of its cycle multimodal fusion is not available to the project
(README, "Multitask"; cen_jax/tasks/multitask/core.py).

  python main.py --config=configs/nyud_predicted_depth.py --workdir=runs/pd \
    --config.data.data_dir=~/tensorflow_datasets \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth
"""

import ml_collections

from configs import nyud_multitask


def get_config():
  c = nyud_multitask.get_config()
  c.model.streams = (('rgb', 'depth'), ('rgb', 'semseg'),
                     ('pred:depth', 'semseg'))
  c.multitask.loss_weights = ml_collections.ConfigDict(
      {'semseg': 1.0, 'depth': 1.0})
  return c
