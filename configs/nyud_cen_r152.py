r"""CEN on NYUDv2, ResNet-152: 150 epochs per stage (51.6 mIoU reported).

  python main.py --config=configs/nyud_cen_r152.py --workdir=runs/nyud_r152 \
    --config.train.imagenet_checkpoint=/path/to/resnet152-b121ed2d.pth
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.depth = '152'
  c.optim.stage_epochs = (150, 150, 150)
  return c
