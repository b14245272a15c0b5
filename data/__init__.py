"""TFDS builders for CEN's data (array_record files).

Importing this package (or any builder module) registers, as TFDS does for
every ``GeneratorBasedBuilder`` subclass, for RGB-D segmentation:

* ``nyud_v2`` (configs ``default``, ``hha``): NYUDv2, 40 classes;
* ``sunrgbd`` (configs ``default``, ``toolbox``): SUN RGB-D, 37 classes;
* ``rgbd_folder``: a user's own data, with an ``RgbdFolderConfig``;
* ``synthetic_rgbd`` (configs ``default``, ``tiny``): generated locally;

and for image-to-image translation:

* ``taskonomy``: the Taskonomy sample set in the layout of CEN's
  translation code (``data/taskonomy.py``), a ``TaskonomyConfig`` for
  other domain sets or minimum sizes;
* ``synthetic_taskonomy`` (configs ``default``, ``tiny``): generated
  locally in that layout and built by the same code;

and for multi-task learning (segmentation, depth and surface normals):

* ``nyuv2_mtl``: NYUv2 at 288x384, 13 classes, from the ``.npy`` files
  preprocessed by MTAN / LibMTL (``data/nyuv2_mtl.py``); it stores float32
  ``image``, ``depth`` and ``normal`` as given and a uint8 ``label`` with
  255 = ignore;
* ``synthetic_mtl`` (configs ``default``, ``tiny``): the scenes of
  ``synthetic_rgbd``, shaded, with 7 classes, exact depth and analytic
  camera-frame normals, generated locally with the features of
  ``nyuv2_mtl`` (``data/synthetic_mtl.py``).

The translation builders store ``images``, one uint8 (H, W, 3) PNG per
domain in the order of ``info.metadata['domains']``, and ``name``; read them
with ``cen_jax.tasks.translation.input_pipeline.get_source``.

Features of all the segmentation builders: ``rgb`` uint8 (H, W, 3),
``depth`` uint16 (H, W) metres x 5000 as stored, ``label`` uint8 (H, W)
with 255 = ignore (both defined in ``data.conventions``), ``name`` text,
and ``hha`` uint8 (H, W, 3) where the config computes it. The class
names, K, the ignore label and the depth scale are in
``info.metadata``. Build with ``prepare``; read with
``cen_jax.tasks.segmentation.input_pipeline.get_source``.
"""

import pathlib

import tensorflow_datasets as tfds

from data import folder
from data import nyud_v2
from data import nyuv2_mtl
from data import sunrgbd
from data import synthetic_mtl
from data import synthetic_rgbd
from data import synthetic_translation
from data import taskonomy

BUILDERS = {
    'nyud_v2': nyud_v2.NyudV2,
    'sunrgbd': sunrgbd.Sunrgbd,
    'rgbd_folder': folder.RgbdFolder,
    'synthetic_rgbd': synthetic_rgbd.SyntheticRgbd,
    'taskonomy': taskonomy.Taskonomy,
    'synthetic_taskonomy': synthetic_translation.SyntheticTaskonomy,
    'nyuv2_mtl': nyuv2_mtl.Nyuv2Mtl,
    'synthetic_mtl': synthetic_mtl.SyntheticMtl,
}


def prepare(name: str, *, data_dir: str | pathlib.Path,
            manual_dir: str | pathlib.Path | None = None,
            config: str | tfds.core.BuilderConfig | None = None
            ) -> tfds.core.DatasetBuilder:
  """Builds a dataset into ``data_dir`` as array_record, if not built yet.

  Nothing is downloaded: the real datasets are read from ``manual_dir``
  (default ``<data_dir>/downloads/manual``) and ``synthetic_rgbd``,
  ``synthetic_taskonomy`` and ``synthetic_mtl`` are generated.

  Args:
    name: a key of ``BUILDERS``, optionally with a config as
      ``'nyud_v2/hha'``.
    data_dir: where TFDS writes the prepared dataset.
    manual_dir: the directory in the layout the builder's
      ``MANUAL_DOWNLOAD_INSTRUCTIONS`` describe.
    config: a config name or object (e.g. ``folder.RgbdFolderConfig``);
      overrides one given in ``name``.

  Returns:
    The prepared builder.

  Raises:
    ValueError: unknown ``name`` (the message lists the choices).
  """
  base, _, config_name = name.partition('/')
  if base not in BUILDERS:
    raise ValueError(f'unknown dataset {base!r}; choose one of '
                     f'{sorted(BUILDERS)}')
  builder = BUILDERS[base](config=config or config_name or None,
                           data_dir=str(data_dir), file_format='array_record')
  download_config = tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else str(manual_dir),
      try_download_gcs=False)
  try:
    builder.download_and_prepare(download_config=download_config)
  except FileExistsError:
    # Another process sharing data_dir (a host of the same run) renamed its
    # finished copy into place first; use that one.
    builder = BUILDERS[base](config=config or config_name or None,
                             data_dir=str(data_dir),
                             file_format='array_record')
    if not builder.is_prepared():
      raise
  return builder
