"""Tests of the ``data`` package: registration and ``prepare``."""

import pytest
import tensorflow_datasets as tfds

import data


def test_importing_registers_every_builder():
  for name, cls in data.BUILDERS.items():
    assert tfds.builder_cls(name) is cls


def test_prepare_unknown_name_lists_choices(tmp_path):
  with pytest.raises(ValueError,
                     match=r"'nyu'.*\['nyud_v2', 'nyuv2_mtl', 'rgbd_folder'"):
    data.prepare('nyu', data_dir=tmp_path)


def test_prepare_synthetic_with_config_in_name(tmp_path):
  builder = data.prepare('synthetic_rgbd/tiny', data_dir=tmp_path)
  assert builder.builder_config.name == 'tiny'
  assert builder.info.splits['train'].num_examples == 16
  assert builder.info.file_format.value == 'array_record'
  # Preparing again reuses the files.
  again = data.prepare('synthetic_rgbd', config='tiny', data_dir=tmp_path)
  assert again.data_dir == builder.data_dir
