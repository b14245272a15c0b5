r"""CEN on NYUDv2, ResNet-101: the official recipe (51.1 mIoU reported).

Prepare the data once (see data/nyud_v2.py for the layout), then:

  python main.py --config=configs/nyud_cen.py --workdir=runs/nyud_cen \
    --config.data.data_dir=~/tensorflow_datasets \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth
"""

from configs import default


def get_config():
  return default.get_config()
