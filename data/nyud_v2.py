"""NYU Depth v2, 40 classes, as distributed for CEN (795 train / 654 test).

Built from a manual directory in the official CEN layout (see
``data/folder.py``): ``rgb/``, ``depth/``, ``masks/`` and the official
``train.txt`` (795 lines) and ``val.txt`` (654 lines, which becomes the
``test`` split). Configs: ``nyud_v2`` (= ``nyud_v2/default``),
``nyud_v2/hha``, which adds the ``hha`` feature computed at build time with
the NYU Kinect intrinsics (480x640 depth, or the 468x625 crop),
``nyud_v2/normals``, which adds the ``normal`` feature (surface normals
fitted to the depth with the same intrinsics by ``data.normals``, for the
multitask task: NYUDv2's CEN release has no normals, so these are this
project's derivation), and ``nyud_v2/hha_normals`` with both.

Nothing is cropped at build time: CEN's RGB and masks are 468x625 while its
depth PNGs are larger, and the input pipeline centre-crops RGB, depth and HHA
to the mask size like the official ``CropAlignToMask``.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data import folder

# The 40 classes of Gupta et al. (CVPR 2013), in CEN label order.
CLASS_NAMES = (
    'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door',
    'window', 'bookshelf', 'picture', 'counter', 'blinds', 'desk', 'shelves',
    'curtain', 'dresser', 'pillow', 'mirror', 'floor mat', 'clothes',
    'ceiling', 'books', 'refridgerator', 'television', 'paper', 'towel',
    'shower curtain', 'box', 'whiteboard', 'person', 'night stand', 'toilet',
    'sink', 'lamp', 'bathtub', 'bag', 'otherstructure', 'otherfurniture',
    'otherprop')
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_LISTS = {'train': 'train.txt', 'test': 'val.txt'}

_CITATION = """\
@inproceedings{silberman2012indoor,
  title={Indoor Segmentation and Support Inference from RGBD Images},
  author={Silberman, Nathan and Hoiem, Derek and Kohli, Pushmeet and
          Fergus, Rob},
  booktitle={ECCV}, year={2012}}
@inproceedings{gupta2013perceptual,
  title={Perceptual Organization and Recognition of Indoor Scenes from
         {RGB-D} Images},
  author={Gupta, Saurabh and Arbelaez, Pablo and Malik, Jitendra},
  booktitle={CVPR}, year={2013}}
"""


def labels40_from_nyuv2_meta(values: np.ndarray) -> np.ndarray:
  """Converts "nyuv2-meta-data" 40-class labels to the CEN convention.

  The ankurhanda/nyuv2-meta-data PNGs use 0 = void and 1..40 = classes;
  CEN's masks use 0..39 and 255 = ignore: ``y = v - 1; y[v == 0] = 255``.

  Args:
    values: (H, W) integer labels in 0..40.

  Returns:
    (H, W) uint8 labels in 0..39 and 255.
  """
  return folder.from_void_zero(values, NUM_CLASSES)


@dataclasses.dataclass(eq=False)
class NyudV2Config(tfds.core.BuilderConfig):
  """Attributes: hha, normals: compute ``hha`` / ``normal`` at build time."""
  hha: bool = False
  normals: bool = False


class NyudV2(tfds.core.GeneratorBasedBuilder):
  """NYUDv2 40-class RGB-D segmentation in the CEN release's layout."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      NyudV2Config(name='default', description='RGB, depth, labels.'),
      NyudV2Config(name='hha', hha=True,
                   description='RGB, depth, labels and HHA.'),
      NyudV2Config(name='normals', normals=True,
                   description='RGB, depth, labels and surface normals '
                   'fitted to the depth (data.normals).'),
      NyudV2Config(name='hha_normals', hha=True, normals=True,
                   description='RGB, depth, labels, HHA and surface '
                   'normals.'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  CEN's NYUDv2 data is not downloadable automatically. Get the archive
  linked from the CEN README (github.com/yikaiw/CEN, "Datasets": NYUDv2
  with rgb/, depth/, masks/, prepared by the authors from DrSleep's
  Light-Weight-RefineNet release plus depth) and the list files
  semantic_segmentation/data/nyudv2/train.txt and val.txt from the CEN
  repository. Arrange the manual directory (by default
  <data_dir>/downloads/manual/, or pass manual_dir) as:

    <manual_dir>/rgb/000003.png     RGB (468x625 in CEN's release)
    <manual_dir>/depth/000003.png   uint16 depth, metres x 5000 (may be
                                    larger than the mask, e.g. 480x640)
    <manual_dir>/masks/000003.png   labels 0..39, 255 = ignore
    <manual_dir>/train.txt          795 lines "rgb/..<TAB>masks/..<TAB>depth/.."
    <manual_dir>/val.txt            654 lines, becomes the "test" split

  Labels in the nyuv2-meta-data convention (0 = void, 1..40) can be
  converted with data.nyud_v2.labels40_from_nyuv2_meta.
  """

  def _layout(self) -> folder.Layout:
    return folder.Layout(class_names=CLASS_NAMES, split_lists=SPLIT_LISTS,
                         hha=self.builder_config.hha,
                         normals=self.builder_config.normals)

  def _info(self) -> tfds.core.DatasetInfo:
    return folder.dataset_info(
        self, self._layout(),
        description='NYU Depth v2 labelled set, 40 classes (Gupta et al.), '
        'in the layout of the CEN release; depth stored as uint16 metres x '
        '5000, RGB/depth uncropped.',
        homepage='https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html',
        citation=_CITATION)

  def _split_generators(self, dl_manager):
    return folder.split_generators(dl_manager.manual_dir, self._layout(),
                                   self._generate_examples)

  def _generate_examples(self, root, entries):
    yield from folder.generate_examples(root, entries, self._layout())
