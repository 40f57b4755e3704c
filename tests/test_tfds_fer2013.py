"""The fer2013 TFDS builder: prepare, read back, Grain, CLI; no TF, no network."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_jax.config import default_config
from fer_jax.data import dataset, sources, tfds_fer2013
from fer_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGES = ('Training', 'PublicTest', 'PrivateTest')


def _write_csv(path, num_rows=30, seed=0):
  """A challenge CSV of distinct random images, usages interleaved."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_rows, 48 * 48))
  # Every usage present; the rest random so rows of a split are not adjacent.
  usages = np.concatenate([np.arange(3), rng.integers(0, 3, num_rows - 3)])
  with open(path, 'w') as f:
    f.write('emotion,pixels,Usage\n')
    for image, usage in zip(images, rng.permutation(usages)):
      f.write(f'{rng.integers(0, 7)},{" ".join(map(str, image))},'
              f'{USAGES[usage]}\n')


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('manual')
  _write_csv(str(path / 'fer2013.csv'))
  return str(path)


@pytest.fixture(scope='module')
def data_dir(manual_dir, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  tfds_fer2013.prepare(manual_dir, path)
  return path


@pytest.fixture
def no_network(monkeypatch):
  """Fails any attempt to open a network connection."""
  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')
  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(socket, 'getaddrinfo', refuse)


def test_prepare_writes_array_record_files(data_dir):
  version_dir = os.path.join(data_dir, 'fer2013', '1.0.0')
  files = os.listdir(version_dir)
  for split in ('train', 'validation', 'test'):
    assert any(f.startswith(f'fer2013-{split}.array_record-') for f in files)
  assert not any('tfrecord' in f for f in files)
  assert tfds_fer2013.is_prepared(data_dir)


def test_info_has_classes_supervised_keys_and_split_sizes(data_dir,
                                                           manual_dir):
  info = tfds.builder('fer2013', data_dir=data_dir).info
  expected = sources.load(os.path.join(manual_dir, 'fer2013.csv'))
  assert info.features['label'].names == list(sources.FER2013_CLASSES)
  assert info.supervised_keys == ('image', 'label')
  assert {name: info.splits[name].num_examples
          for name in ('train', 'validation', 'test')} == {
              'train': len(expected.splits['train']),
              'validation': len(expected.splits['val']),
              'test': len(expected.splits['test'])}


def test_load_prepared_equals_sources_load_in_order(data_dir, manual_dir):
  # Same order, not just the same set: the builder writes unshuffled so that
  # index i means the same image whichever reader a run used.
  expected = sources.load(os.path.join(manual_dir, 'fer2013.csv'))
  data = tfds_fer2013.load_prepared(data_dir)
  assert data.class_names == expected.class_names
  assert set(data.splits) == {'train', 'val', 'test'}
  for name, split in expected.splits.items():
    got = data.splits[name]
    assert got.images.shape == split.images.shape
    assert got.images.dtype == np.uint8 and got.labels.dtype == np.int32
    np.testing.assert_array_equal(got.images, split.images)
    np.testing.assert_array_equal(got.labels, split.labels)


def test_data_source_feeds_a_grain_pipeline(data_dir):
  source = tfds.data_source('fer2013', split='train', data_dir=data_dir,
                            download=False, try_gcs=False)
  dataset = grain.MapDataset.source(source).map(
      lambda e: (e['image'][..., 0], e['label'])).batch(4)
  images, labels = dataset[1]
  expected = tfds_fer2013.load_prepared(data_dir).splits['train']
  np.testing.assert_array_equal(images, expected.images[4:8])
  np.testing.assert_array_equal(labels, expected.labels[4:8])


def test_prepare_and_load_need_no_network(manual_dir, tmp_path, no_network):
  tfds_fer2013.prepare(manual_dir, str(tmp_path))
  assert len(tfds_fer2013.load_prepared(str(tmp_path)).splits['train'])


def test_prepare_and_load_leave_no_temporary_directory(manual_dir, tmp_path,
                                                       monkeypatch):
  temp = tmp_path / 'temp'
  temp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(temp))
  data_dir = str(tmp_path / 'tfds')
  tfds_fer2013.prepare(manual_dir, data_dir)
  tfds_fer2013.load_prepared(data_dir)
  assert not os.listdir(temp)


def test_prepare_reads_the_image_folder_zip(make_synthetic_fer, tmp_path):
  (tmp_path / 'manual').mkdir()
  zip_path = make_synthetic_fer().write_zip('manual/images.zip')
  tfds_fer2013.prepare(str(tmp_path / 'manual'), str(tmp_path / 'tfds'))
  expected = sources.load(zip_path)
  data = tfds_fer2013.load_prepared(str(tmp_path / 'tfds'))
  for name, split in expected.splits.items():
    np.testing.assert_array_equal(data.splits[name].images, split.images)
    np.testing.assert_array_equal(data.splits[name].labels, split.labels)


@pytest.mark.parametrize('kind', ['empty dir', 'missing', 'csv file'])
def test_no_prepared_dataset_is_a_user_error(kind, tmp_path):
  path = str(tmp_path if kind == 'empty dir' else tmp_path / 'fer2013.csv')
  if kind == 'csv file':
    _write_csv(path, num_rows=5)
  assert not tfds_fer2013.is_prepared(path)
  with pytest.raises(UserError, match='tfds_fer2013'):
    tfds_fer2013.load_prepared(path)


def test_is_prepared_is_false_for_an_empty_path():
  assert not tfds_fer2013.is_prepared('')


def test_manual_dir_without_a_download_is_a_user_error(tmp_path):
  (tmp_path / 'manual').mkdir()
  with pytest.raises(UserError, match='fer2013.tar.gz'):
    tfds_fer2013.prepare(str(tmp_path / 'manual'), str(tmp_path / 'tfds'))
  assert not os.path.exists(tmp_path / 'tfds')
  with pytest.raises(UserError, match='does not exist'):
    tfds_fer2013.prepare(str(tmp_path / 'missing'), str(tmp_path / 'tfds'))


def test_bad_record_is_a_user_error_and_prepares_nothing(manual_dir,
                                                         tmp_path):
  (tmp_path / 'manual').mkdir()
  with open(os.path.join(manual_dir, 'fer2013.csv')) as f:
    lines = f.readlines()
  lines.insert(3, '9,1 2 3,Training\n')
  (tmp_path / 'manual' / 'fer2013.csv').write_text(''.join(lines))
  with pytest.raises(UserError, match='row 4'):
    tfds_fer2013.prepare(str(tmp_path / 'manual'), str(tmp_path / 'tfds'))
  assert not tfds_fer2013.is_prepared(str(tmp_path / 'tfds'))
  tfds_fer2013.prepare(str(tmp_path / 'manual'), str(tmp_path / 'tfds'),
                       on_bad_record='skip')
  data = tfds_fer2013.load_prepared(str(tmp_path / 'tfds'))
  assert sum(len(s) for s in data.splits.values()) == len(lines) - 2


def _cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'fer_jax.data.tfds_fer2013', *args],
      capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_prepares_and_prints_split_sizes(manual_dir, tmp_path):
  result = _cli(f'--manual_dir={manual_dir}', f'--data_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert os.path.join(str(tmp_path), 'fer2013', '1.0.0') in result.stdout
  sizes = {line.split(':')[0].strip(): int(line.split()[1])
           for line in result.stdout.splitlines() if 'examples' in line}
  assert set(sizes) == {'train', 'validation', 'test'}
  assert sum(sizes.values()) == 30
  assert tfds_fer2013.is_prepared(str(tmp_path))


def test_cli_user_error_is_one_line_and_exit_2(tmp_path):
  result = _cli(f'--manual_dir={tmp_path}', f'--data_dir={tmp_path / "o"}')
  assert result.returncode == 2
  assert result.stderr.startswith('error: Manual dir')
  assert result.stderr.count('\n') == 1


def test_import_prepare_and_load_do_not_import_tensorflow(manual_dir,
                                                          tmp_path):
  code = (
      'import sys\n'
      'from fer_jax.data import tfds_fer2013 as t\n'
      f't.prepare({manual_dir!r}, {str(tmp_path)!r})\n'
      f't.load_prepared({str(tmp_path)!r})\n'
      'assert "tensorflow" not in sys.modules, "TF imported"\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr


def test_runs_on_the_csv_need_no_tfds(manual_dir):
  code = (
      'import sys\n'
      "sys.modules['tensorflow_datasets'] = None  # As if not installed.\n"
      'from fer_jax.config import default_config\n'
      'from fer_jax.data import dataset\n'
      'config = default_config().data\n'
      f"config.path = {os.path.join(manual_dir, 'fer2013.csv')!r}\n"
      'print(sum(map(len, dataset.load(config).splits.values())))\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['30']


def test_a_run_reads_a_prepared_data_dir(data_dir):
  config = default_config().data
  config.path = data_dir
  expected = tfds_fer2013.load_prepared(data_dir)
  for name, split in dataset.load(config).splits.items():
    np.testing.assert_array_equal(split.images, expected.splits[name].images)
  config.ferplus_path = 'fer2013new.csv'
  with pytest.raises(UserError, match='challenge CSV'):
    dataset.load(config)
  config.ferplus_path = ''
  config.split_ratios = (0.8, 0.1, 0.1)
  with pytest.raises(UserError, match='holds the splits made when it was '
                     'prepared'):
    dataset.load(config)


def test_the_extracted_kaggle_tarball_is_found(manual_dir, tmp_path):
  (tmp_path / 'fer2013').mkdir()
  shutil.copy(os.path.join(manual_dir, 'fer2013.csv'),
              tmp_path / 'fer2013' / 'fer2013.csv')
  found = tfds_fer2013._find_manual_file(  # pylint: disable=protected-access
      str(tmp_path))
  assert found == str(tmp_path / 'fer2013' / 'fer2013.csv')
