r"""Multitask CEN on NYUDv2 in the CEN release's layout: 40 classes.

RGB -> semseg (the 40 classes of Gupta et al., as configs/nyud_cen.py),
depth and surface normals, three streams as configs/nyud_multitask.py, on
the 795 / 654 images of CEN's NYUDv2 release (468x625). That release has no
normals: the ``nyud_v2/normals`` builder fits them to the depth at build
time (data/normals.py, the plane fit of the project's HHA code). They are
this project's derivation, not a published ground truth, so the normals
metrics are comparable between runs here, not with papers that use other
normals. For numbers comparable with the multitask literature use
configs/nyud_multitask.py (MTAN's 13-class layout, its normals).

Prepare the data once (data/nyud_v2.py describes the folder), then:

  python main.py --config=configs/nyud40_multitask.py --workdir=runs/mtl40 \
    --config.data.data_dir=~/tensorflow_datasets \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth

Multimodal multitask with HHA (the builder config that stores it too):

  --config.data.name=nyud_v2/hha_normals \
  --config.model.streams="(('rgb','semseg'),('hha','semseg'),\
('rgb','normals'),('hha','normals'))" \
  --config.multitask.loss_weights="{'semseg':1.0,'normals':1.0}"
"""

from configs import nyud_multitask


def get_config():
  c = nyud_multitask.get_config()
  c.model.num_classes = 40
  c.data.name = 'nyud_v2/normals'
  # 468x625 frames: batches of the full frame; the scale-crop and flip of
  # configs/nyud_multitask.py apply.
  return c
