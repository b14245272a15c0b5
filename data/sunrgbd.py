"""SUN RGB-D, 37 classes (5285 train / 5050 test), from a prepared folder.

CEN ships no SUN RGB-D lists or data, only hooks (reference §5.1), so the
accepted layout is the CEN one (see ``data/folder.py``) with two list files::

  <manual_dir>/rgb/...      RGB images
  <manual_dir>/depth/...    16-bit depth PNGs
  <manual_dir>/masks/...    8-bit label PNGs
  <manual_dir>/train.txt    5285 lines "rgb<TAB>mask<TAB>depth"
  <manual_dir>/test.txt     5050 lines

Two configs say how the PNGs encode depth and labels:

* ``sunrgbd`` (= ``sunrgbd/default``): as NYUDv2 in CEN, depth uint16
  metres x 5000 and labels 0..36 with 255 = ignore;
* ``sunrgbd/toolbox``: as exported from the SUN RGB-D toolbox, depth in its
  bit-rotated millimetres (``depth_bfx/*.png``; converted at build time to
  metres x 5000, clipped at 8 m like the toolbox) and labels 0 = void,
  1..37 (``seg37``; converted to 0..36 / 255).

Deviations from the official code: RGB and depth are centre-cropped to the
mask like NYUDv2 (SUN RGB-D images are already aligned with their labels, so
this is the identity), where the official code resizes to the mask and
requires square, pre-resized images. No ``hha`` config: the intrinsics differ
per sensor and image; compute HHA with ``data.hha`` and each image's
intrinsics if needed.
"""

import dataclasses

import tensorflow_datasets as tfds

from data import folder
from data import nyud_v2

# SUN RGB-D's 37 classes are the first 37 NYU-40 classes, in the same order.
CLASS_NAMES = nyud_v2.CLASS_NAMES[:37]
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_LISTS = {'train': 'train.txt', 'test': 'test.txt'}

_CITATION = """\
@inproceedings{song2015sun,
  title={{SUN RGB-D}: A {RGB-D} Scene Understanding Benchmark Suite},
  author={Song, Shuran and Lichtenberg, Samuel P and Xiao, Jianxiong},
  booktitle={CVPR}, year={2015}}
"""


@dataclasses.dataclass(eq=False)
class SunrgbdConfig(tfds.core.BuilderConfig):
  """Attributes: keys of ``folder.LABEL_CONVENTIONS`` / ``DEPTH_ENCODINGS``."""
  label_convention: str = 'cen'
  depth_encoding: str = 'm5000'


class Sunrgbd(tfds.core.GeneratorBasedBuilder):
  """SUN RGB-D 37-class RGB-D segmentation in the CEN folder layout."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SunrgbdConfig(name='default',
                    description='Depth uint16 metres x 5000, labels 0..36 '
                    'and 255.'),
      SunrgbdConfig(name='toolbox', label_convention='void0',
                    depth_encoding='sunrgbd',
                    description='SUN RGB-D toolbox depth and seg37 labels '
                    '(0 = void), converted at build time.'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download SUN RGB-D from https://rgbd.cs.princeton.edu/ (SUNRGBD.zip and
  the SUNRGBDtoolbox with its 37-class labels and train/test split), export
  every image's RGB, depth and 37-class label as PNGs, and arrange the
  manual directory as:

    <manual_dir>/rgb/..., depth/..., masks/...
    <manual_dir>/train.txt   5285 lines "rgb/..<TAB>masks/..<TAB>depth/.."
    <manual_dir>/test.txt    5050 lines, same format

  Use config "default" for depth in uint16 metres x 5000 and labels 0..36
  with 255 = ignore, or "toolbox" for the toolbox's own encodings (bit-
  rotated millimetre depth from depth_bfx/, labels 0 = void, 1..37).
  """

  def _layout(self) -> folder.Layout:
    return folder.Layout(
        class_names=CLASS_NAMES, split_lists=SPLIT_LISTS,
        label_convention=self.builder_config.label_convention,
        depth_encoding=self.builder_config.depth_encoding)

  def _info(self) -> tfds.core.DatasetInfo:
    return folder.dataset_info(
        self, self._layout(),
        description='SUN RGB-D, 37 classes, in the CEN folder layout; depth '
        'stored as uint16 metres x 5000.',
        homepage='https://rgbd.cs.princeton.edu/', citation=_CITATION)

  def _split_generators(self, dl_manager):
    return folder.split_generators(dl_manager.manual_dir, self._layout(),
                                   self._generate_examples)

  def _generate_examples(self, root, entries):
    yield from folder.generate_examples(root, entries, self._layout())
