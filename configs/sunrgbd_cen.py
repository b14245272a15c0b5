r"""CEN on SUN RGB-D (37 classes, 5285 train / 5050 test), ResNet-101.

Prepare the data once (see data/sunrgbd.py for the accepted layout), then:

  python main.py --config=configs/sunrgbd_cen.py --workdir=runs/sunrgbd \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth

SUN RGB-D images differ in size, so evaluation runs one image per device.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.num_classes = 37
  c.data.name = 'sunrgbd'
  return c
