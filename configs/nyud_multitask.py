r"""Multitask CEN on NYUv2 (MTAN / LibMTL layout): RGB -> semseg, depth and
normals.

Three streams, (rgb, semseg), (rgb, depth) and (rgb, normals), share every
conv of a ResNet-101 RefineNet; each keeps its own BNs, exchanges channels
with the other two where its bn2 scales are small (L1 on three disjoint
thirds), and has its own head. This is the project's reading of the TPAMI
paper's multitask scenario: the paper's exact architecture is not available
(README, "Multitask").

Prepare the data once (data/nyuv2_mtl.py describes the files), then:

  python main.py --config=configs/nyud_multitask.py --workdir=runs/mtl \
    --config.data.data_dir=~/tensorflow_datasets \
    --config.train.imagenet_checkpoint=/path/to/resnet101-5d3b4d8f.pth

For Delta_m, evaluate single-task runs (e.g. --config.model.streams=
"(('rgb','semseg'),)") and pass their eval/<step>/ensemble_metrics.json
files as --config.multitask.baselines_files.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.task = 'multitask'
  # (input, task) pairs. Inputs: 'rgb', 'depth' (what the data provides);
  # tasks: 'semseg' (num_classes logits), 'depth' (metres), 'normals'.
  c.model.streams = (('rgb', 'semseg'), ('rgb', 'depth'), ('rgb', 'normals'))
  c.model.num_classes = 13  # NYUv2's 13 classes in the MTL benchmark.
  c.data.name = 'nyuv2_mtl'
  # Full 288x384 frames with MTAN's scale-crop and flip; a positive value
  # adds a random crop of that size.
  c.data.crop_size = 0
  # MTAN's current code augments (scale-crop, flip); its paper's numbers
  # were made without: False reproduces that protocol.
  c.data.augment = True
  # Read by the segmentation task only.
  del c.data['modalities']
  del c.data['scale_range']
  del c.data['shorter_side']
  del c.eval['scales']
  del c.eval['flip']
  c.multitask = ml_collections.ConfigDict()
  # Weight of each task's loss (its streams + its ensemble) in the total.
  c.multitask.loss_weights = ml_collections.ConfigDict(
      {'semseg': 1.0, 'depth': 1.0, 'normals': 1.0})
  # JSON files {task: {metric: value}} of single-task baselines (as
  # --mode=eval writes them, ensemble_metrics.json); with them every
  # evaluation reports eval/delta_m, which then picks the best checkpoint.
  c.multitask.baselines_files = ()
  # '' = eval/delta_m with baselines, else the first task's primary metric
  # (semseg mIoU, depth abs_err, normals mean angle); or any summary key,
  # e.g. 'eval/depth/ensemble/rmse'.
  c.multitask.best_metric = ''
  c.eval.batch_size = 2
  return c
