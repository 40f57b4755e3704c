"""FER2013 as a TFDS dataset in ArrayRecord files, built and read without TF.

Prepare once from the files downloaded by hand:

  python -m fer_jax.data.tfds_fer2013 --manual_dir=DIR --data_dir=DIR

then point `config.data.path` at the data_dir. The builder reads the manual
download with `sources.load`, so the prepared splits hold exactly the images,
labels and order that reading the download directly gives with the
default split settings and --on_bad_record: the CSV and a folder of
prefixed file names carry their official split, and a folder without
prefixes is split by seed 0 and ratios 0.7 / 0.15 / 0.15, whatever a run's
seed (dataset.load refuses other config.data.split_ratios here).

Importing this module registers the `fer2013` builder. TFDS's GCS look-ups
are off by default in this TFDS version, and every call here also turns them
off explicitly, so nothing touches the network.
"""

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from fer_jax.data import sources
from fer_jax.errors import UserError

NAME = 'fer2013'
# TFDS split name -> `FerData` split name.
TFDS_TO_SPLIT = {'train': 'train', 'validation': 'val', 'test': 'test'}
# Manual-dir file names, most specific first.
MANUAL_FILES = ('fer2013.csv', 'fer2013/fer2013.csv', 'fer2013.csv.gz',
                'fer2013.tar.gz', 'fer2013.tgz')
PREPARE_COMMAND = ('python -m fer_jax.data.tfds_fer2013 '
                   '--manual_dir=<download dir> --data_dir=<dir>')


def _find_manual_file(manual_dir: str) -> str:
  """The FER2013 download in `manual_dir`: a known file, a zip, or a folder."""
  for name in MANUAL_FILES:
    path = os.path.join(manual_dir, name)
    if os.path.isfile(path):
      return path
  zips = sorted(n for n in os.listdir(manual_dir) if n.lower().endswith('.zip'))
  if len(zips) == 1:
    return os.path.join(manual_dir, zips[0])
  if len(zips) > 1:
    raise UserError(f'Manual dir {manual_dir} holds several zips {zips}: keep '
                    'only the FER2013 image-folder zip.')
  if all(os.path.isdir(os.path.join(manual_dir, s)) for s in ('train', 'test')):
    return manual_dir
  raise UserError(f'Manual dir {manual_dir} holds no FER2013 download: put '
                  'fer2013.tar.gz (or what it extracts to), fer2013.csv(.gz) '
                  'or the image-folder zip there. ' + sources.DOWNLOAD_HINT)


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  """DatasetInfo of a dataset that is only ever built locally."""

  def initialize_from_bucket(self) -> None:
    """Nothing: fer2013 is not on TFDS's bucket. TFDS 4.9.10 calls this on
    every builder whose data_dir holds no prepared dataset yet, and it
    leaves an empty /tmp/tmp*tfds directory behind each time."""


class Fer2013(tfds.core.GeneratorBasedBuilder,
              # Under `python -m` this file also runs as `__main__`; only the
              # package module's class may take the name, or importing it
              # would raise "already registered".
              skip_registration=__name__ == '__main__'):
  """FER2013: 48x48 grey faces, 7 emotions, from a manual download."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: Usage splits, CSV row order.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put one of fer2013.tar.gz, fer2013.csv or fer2013.csv.gz (the '
      'challenge CSV), or the image-folder zip (train/<class>/, '
      'test/<class>/), in the manual dir. ' + sources.DOWNLOAD_HINT)
  # TFDS 4.9.10 derives this from the package via `importlib_resources`,
  # which it does not install (tensorflow/datasets#11212); it only locates
  # checksums.tsv, and this dataset downloads nothing.
  code_path = None

  def __init__(self, *, on_bad_record: str = 'error', **kwargs):
    super().__init__(**kwargs)
    self._on_bad_record = on_bad_record

  def _info(self) -> tfds.core.DatasetInfo:
    # Not `dataset_info_from_configs`: it would read README.md, TAGS.txt, ...
    # of whatever else lives in fer_jax/data/.
    return _LocalDatasetInfo(
        builder=self,
        description=(
            'FER2013 facial expressions: 48x48 grey faces labelled '
            f'{", ".join(sources.FER2013_CLASSES)}. Splits follow Usage: '
            'Training -> train, PublicTest -> validation, PrivateTest -> '
            'test, each in the download\'s order.'),
        # A Tensor, not tfds.features.Image: Image needs TensorFlow to encode.
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(48, 48, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=sources.FER2013_CLASSES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.kaggle.com/c/challenges-in-representation-'
                 'learning-facial-expression-recognition-challenge',
        # Keep the download's order so that index i here is index i of
        # `sources.load`, and seeded pipelines agree across both readers.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = _find_manual_file(os.fspath(dl_manager.manual_dir))
    data = sources.load(path, on_bad_record=self._on_bad_record)
    for name, split in TFDS_TO_SPLIT.items():
      # TFDS refuses to write an empty split, with a message naming neither.
      if not len(data.splits[split]):
        raise UserError(f'{path} has no {name} ({split}) images: FER2013 '
                        'needs all of Training, PublicTest and PrivateTest.')
    return {name: self._generate_examples(data.splits[split])
            for name, split in TFDS_TO_SPLIT.items()}

  def _generate_examples(self, split: sources.Split):
    # Integer keys: with shuffling off TFDS writes examples in key order.
    for index, (image, label) in enumerate(zip(split.images, split.labels)):
      yield index, {'image': image[:, :, None], 'label': int(label)}


def _version_dir(data_dir: str) -> str:
  return os.path.join(os.path.expanduser(data_dir), NAME,
                      str(Fer2013.VERSION))


def is_prepared(path: str) -> bool:
  """True when `path` is a TFDS data_dir holding a prepared fer2013."""
  return bool(path) and os.path.isfile(
      os.path.join(_version_dir(path), 'dataset_info.json'))


def prepare(manual_dir: str, data_dir: str,
            on_bad_record: str = 'error') -> None:
  """Builds fer2013 in ArrayRecord files under `data_dir` from `manual_dir`.

  A no-op when `data_dir` already holds it. `on_bad_record` is as in
  `sources.load`; skipped records are logged, not kept in the dataset.
  """
  manual_dir = os.path.expanduser(manual_dir)
  if not os.path.isdir(manual_dir):
    raise UserError(f'Manual dir {manual_dir} does not exist: create it and '
                    'put the FER2013 download there. ' + sources.DOWNLOAD_HINT)
  _find_manual_file(manual_dir)  # Fail before TFDS makes any directory.
  builder = Fer2013(data_dir=os.path.expanduser(data_dir),
                    on_bad_record=on_bad_record)
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir, try_download_gcs=False))


def load_prepared(data_dir: str) -> sources.FerData:
  """Reads a prepared fer2013 into arrays: images [N, 48, 48], labels int32."""
  if not is_prepared(data_dir):
    raise UserError(f'{data_dir} holds no prepared fer2013 (no '
                    f'{_version_dir(data_dir)}/dataset_info.json): run '
                    f'`{PREPARE_COMMAND}` first.')
  splits = {}
  for tfds_split, split in TFDS_TO_SPLIT.items():
    source = tfds.data_source(NAME, split=tfds_split,
                              data_dir=os.path.expanduser(data_dir),
                              download=False, try_gcs=False)
    # One batched read per shard, not 35k single lookups.
    examples = source.__getitems__(list(range(len(source))))
    images = np.stack([e['image'][:, :, 0] for e in examples]) if examples \
        else np.zeros((0, 48, 48), np.uint8)
    labels = np.asarray([e['label'] for e in examples], np.int32)
    splits[split] = sources.Split(images, labels)
  return sources.FerData(class_names=sources.FER2013_CLASSES, splits=splits)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m fer_jax.data.tfds_fer2013',
      description='Builds FER2013 as a TFDS dataset (ArrayRecord) from a '
                  'manual download.')
  parser.add_argument('--manual_dir', required=True,
                      help='directory holding fer2013.tar.gz, '
                           'fer2013.csv(.gz) or the image-folder zip')
  parser.add_argument('--data_dir', required=True,
                      help='TFDS data_dir to write fer2013/ into')
  parser.add_argument('--on_bad_record', default='error',
                      choices=sources.BAD_RECORD_POLICIES,
                      help='stop at a bad record, or skip (and log) it')
  args = parser.parse_args(argv)
  try:
    prepare(args.manual_dir, args.data_dir, args.on_bad_record)
  except UserError as e:
    # `sources` names the training flag; this command has its own.
    message = str(e).replace('--config.data.on_bad_record', '--on_bad_record')
    print(f'error: {message}', file=sys.stderr)
    return 2
  # Sizes from the written metadata: reading the records would take longer.
  info = Fer2013(data_dir=os.path.expanduser(args.data_dir)).info
  print(f'fer2013 is prepared in {_version_dir(args.data_dir)}')
  for tfds_split in TFDS_TO_SPLIT:
    print(f'  {tfds_split}: {info.splits[tfds_split].num_examples} examples')
  return 0


if __name__ == '__main__':
  # The package module's builder is the registered one (see `Fer2013`).
  from fer_jax.data import tfds_fer2013  # pylint: disable=g-import-self
  sys.exit(tfds_fer2013.main())
