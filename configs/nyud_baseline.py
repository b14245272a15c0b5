r"""The no-exchange ablation on NYUDv2, ResNet-101: shared convs, private BNs,
late ensemble only (and no L1 penalty, which only matters for exchange).

  python main.py --config=configs/nyud_baseline.py --workdir=runs/nyud_base \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.exchange = 'none'
  c.model.exchange_kwargs = {}
  c.optim.l1_coef = 0.0
  return c
