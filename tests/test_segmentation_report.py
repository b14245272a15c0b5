"""Tests for cen_jax.tasks.segmentation.report against hand-worked answers."""

import csv
import json

import numpy as np
from PIL import Image
import pytest

from cen_jax.tasks.segmentation import report

_CLASSES = ('floor', 'wall', 'chair')
_OUTPUTS = ('rgb', 'ensemble')
# Rows = ground truth, columns = prediction; 6 pixels each, chair never
# appears in either ground truth or prediction.
#
# rgb: row sums (4, 2, 0), column sums (3, 3, 0), diagonal (3, 2, 0).
#   IoU floor = 3 / (4 + 3 - 3) = 75%, wall = 2 / (2 + 3 - 2) = 66.6667%,
#   chair = 0 / 0 = NaN; mIoU = (75 + 66.6667) / 2 = 70.8333%.
#   Pixel acc = 5 / 6 = 83.3333%; mean acc = (3/4 + 2/2) / 2 = 87.5%.
# ensemble: row sums (4, 2, 0), column sums (5, 1, 0), diagonal (4, 1, 0).
#   IoU floor = 4 / (4 + 5 - 4) = 80%, wall = 1 / (2 + 1 - 1) = 50%,
#   chair = NaN; mIoU = (80 + 50) / 2 = 65%.
#   Pixel acc = 5 / 6 = 83.3333%; mean acc = (4/4 + 1/2) / 2 = 75%.
_CONFUSIONS = np.array([
    [[3, 1, 0], [0, 2, 0], [0, 0, 0]],
    [[4, 0, 0], [1, 1, 0], [0, 0, 0]],
], np.int64)


@pytest.fixture(name='written')
def _written(tmp_path):
  directory = tmp_path / 'eval' / 'step_100'  # Parents do not exist yet.
  paths, text = report.write_report(directory, _CONFUSIONS, _OUTPUTS,
                                    _CLASSES)
  return directory, paths, text


def test_paths_are_the_documented_files(written):
  directory, paths, _ = written
  assert paths == {
      'scores': directory / 'scores.json',
      'per_class_md': directory / 'per_class_iou.md',
      'per_class_csv': directory / 'per_class_iou.csv',
      'confusion_npy/rgb': directory / 'confusion_rgb.npy',
      'confusion_png/rgb': directory / 'confusion_rgb.png',
      'confusion_npy/ensemble': directory / 'confusion_ensemble.npy',
      'confusion_png/ensemble': directory / 'confusion_ensemble.png',
  }
  assert all(p.is_file() for p in paths.values())


def test_scores_json_holds_hand_worked_scores(written):
  _, paths, _ = written
  text = paths['scores'].read_text(encoding='utf-8')
  assert 'NaN' not in text
  assert json.loads(text) == {
      'outputs': {
          'rgb': {
              'pixel_acc': 83.3333, 'mean_acc': 87.5, 'miou': 70.8333,
              'iou_per_class': {'floor': 75.0, 'wall': 66.6667,
                                'chair': None},
          },
          'ensemble': {
              'pixel_acc': 83.3333, 'mean_acc': 75.0, 'miou': 65.0,
              'iou_per_class': {'floor': 80.0, 'wall': 50.0, 'chair': None},
          },
      },
      'class_names': ['floor', 'wall', 'chair'],
      'pixels': {'rgb': 6, 'ensemble': 6},
  }


def test_predicted_but_absent_class_scores_zero_not_null(tmp_path):
  # Class b is never in the ground truth but predicted once: IoU
  # 0 / (0 + 1 - 0) = 0 counts in mIoU, while its accuracy 0 / 0 does not
  # count in mean acc. a: IoU 2 / (3 + 2 - 2) = 66.6667%, acc 2/3.
  # mIoU = (66.6667 + 0) / 2 = 33.3333%; mean acc = 66.6667%.
  paths, _ = report.write_report(tmp_path, np.array([[[2, 1], [0, 0]]]),
                                 ('depth',), ('a', 'b'))
  scores = json.loads(paths['scores'].read_text(encoding='utf-8'))
  assert scores['outputs']['depth'] == {
      'pixel_acc': 66.6667, 'mean_acc': 66.6667, 'miou': 33.3333,
      'iou_per_class': {'a': 66.6667, 'b': 0.0},
  }
  assert scores['pixels'] == {'depth': 3}


def test_npy_round_trips_bit_for_bit(written):
  _, paths, _ = written
  for name, conf in zip(_OUTPUTS, _CONFUSIONS, strict=True):
    loaded = np.load(paths[f'confusion_npy/{name}'])
    assert loaded.dtype == np.int64
    np.testing.assert_array_equal(loaded, conf)


def test_markdown_rows(written):
  _, paths, _ = written
  lines = paths['per_class_md'].read_text(encoding='utf-8').splitlines()
  assert lines == [
      '| index | class | rgb | ensemble |',
      '|---:|:---|---:|---:|',
      '| 0 | floor | 75.00 | 80.00 |',
      '| 1 | wall | 66.67 | 50.00 |',
      '| 2 | chair | \u2014 | \u2014 |',
      '|  | mIoU | 70.83 | 65.00 |',
  ]


def test_csv_cells(written):
  _, paths, _ = written
  with paths['per_class_csv'].open(newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  assert rows == [
      ['index', 'class', 'rgb', 'ensemble'],
      ['0', 'floor', '75.0000', '80.0000'],
      ['1', 'wall', '66.6667', '50.0000'],
      ['2', 'chair', '', ''],
      ['', 'mIoU', '70.8333', '65.0000'],
  ]


def test_png_decodes_at_figsize_times_dpi(written):
  _, paths, _ = written
  for name in _OUTPUTS:
    with Image.open(paths[f'confusion_png/{name}']) as image:
      image.load()
      assert image.format == 'PNG'
      assert image.mode in ('RGB', 'RGBA')
      # 10 x 9 inches at 100 dpi.
      assert image.size == (1000, 900)
      # Not blank: the heat-map, labels and colour bar draw many colours.
      assert len(image.getcolors(maxcolors=1 << 20)) > 10


def test_row_normalised_keeps_absent_rows_zero():
  # Row 0: (3, 1) / 4; row 1: (0, 2) / 2; row 2 is absent from the ground
  # truth, so it stays 0 rather than 0 / 0.
  np.testing.assert_array_equal(
      report._row_normalised(_CONFUSIONS[0]),
      [[0.75, 0.25, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_console_text(written):
  _, _, text = written
  lines = text.splitlines()
  assert text.isascii()
  assert lines[0].split() == ['output', 'pixel', 'acc', 'mean', 'acc',
                              'mIoU']
  assert lines[1].split() == ['rgb', '83.3333', '87.5000', '70.8333']
  assert lines[2].split() == ['ensemble', '83.3333', '75.0000', '65.0000']
  # Fixed width: the summary rows line up on their right edge.
  assert len({len(line) for line in lines[:3]}) == 1
  per_class = [line.split() for line in lines[lines.index('') + 2:]]
  assert per_class == [
      ['#', 'class', 'rgb', 'ensemble'],
      ['0', 'floor', '75.00', '80.00'],
      ['1', 'wall', '66.67', '50.00'],
      ['2', 'chair', '-', '-'],
  ]


@pytest.mark.parametrize('confusions, outputs, classes, message', [
    (_CONFUSIONS, ('rgb', 'depth', 'ensemble'), _CLASSES,
     '2 confusion matrices for 3 output names'),
    (_CONFUSIONS, _OUTPUTS, ('floor', 'wall'),
     '3 x 3 confusion matrices for 2 class names'),
    (_CONFUSIONS[:, :, :2], _OUTPUTS, _CLASSES, 'must be square'),
    (_CONFUSIONS[0], _OUTPUTS, _CLASSES, r'\(outputs, classes, classes\)'),
    (_CONFUSIONS.astype(np.float32), _OUTPUTS, _CLASSES, 'integer counts'),
    (-_CONFUSIONS, _OUTPUTS, _CLASSES, 'negative counts'),
    (_CONFUSIONS, ('rgb', 'rgb'), _CLASSES, 'duplicate output names'),
    (_CONFUSIONS, ('rgb', '../x'), _CLASSES, 'not a valid file name'),
])
def test_bad_inputs_raise_naming_the_problem(tmp_path, confusions, outputs,
                                              classes, message):
  with pytest.raises(ValueError, match=message):
    report.write_report(tmp_path / 'out', confusions, outputs, classes)
  # Nothing is written for rejected input.
  assert not (tmp_path / 'out').exists()


def test_scores_are_not_nan_for_an_empty_output(tmp_path):
  # No pixel counted (getScores: 0 everywhere, per-class NaN -> null).
  paths, text = report.write_report(tmp_path, np.zeros((1, 2, 2), np.int64),
                                    ('rgb',), ('a', 'b'))
  scores = json.loads(paths['scores'].read_text(encoding='utf-8'))
  assert scores['outputs']['rgb'] == {
      'pixel_acc': 0.0, 'mean_acc': 0.0, 'miou': 0.0,
      'iou_per_class': {'a': None, 'b': None},
  }
  assert scores['pixels'] == {'rgb': 0}
  assert text.splitlines()[1].split() == ['rgb', '0.0000', '0.0000', '0.0000']
