r"""The random-exchange ablation on NYUDv2, ResNet-101: a fixed random 10 %
of the bn2 channels of each layer and modality is exchanged.

  python main.py --config=configs/nyud_random.py --workdir=runs/nyud_random \
    --config.model.exchange_kwargs.ratio=0.1 \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.model.exchange = 'random'
  c.model.exchange_kwargs = ml_collections.ConfigDict(
      {'ratio': 0.1, 'seed': 0})
  return c
