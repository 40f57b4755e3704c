"""Readers for FER2013 in the forms users download it, all giving one `FerData`.

Accepted `path` forms (see `describe_forms`):
  * the challenge CSV `fer2013.csv`, gzipped `.csv.gz`, or the Kaggle archive
    `fer2013.tar.gz` / `.tgz` holding it (read in memory, never extracted);
  * an image folder, as a directory or a `.zip`: `train/<class>/*.jpg` and
    `test/<class>/*.jpg`, where the file-name prefixes `Training_`,
    `PublicTest_` and `PrivateTest_` give the splits; when no file name has
    such a prefix, every image is pooled and split with a seeded stratified
    split (a mix of names with and without a prefix is an error);
  * optionally, FER+ votes (`fer2013new.csv`) that relabel the CSV rows by
    row position.

FER2013 is 82 MB as uint8, so every reader materialises whole arrays: the
input pipeline then never touches the disk.
"""

import contextlib
import csv
import dataclasses
import gzip
import hashlib
import logging
import os
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np

from fer_jax.data import ferplus
from fer_jax.errors import UserError

IMAGE_SIZE = 48
FER2013_CLASSES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise',
                   'neutral')
USAGE_TO_SPLIT = {'Training': 'train', 'PublicTest': 'val',
                  'PrivateTest': 'test'}
SPLITS = ('train', 'val', 'test')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.pgm', '.tif', '.tiff')
BAD_RECORD_POLICIES = ('error', 'skip')
# Train / val / test shares of an image folder whose file names carry no
# split (config.data.split_ratios).
DEFAULT_SPLIT_RATIOS = (0.7, 0.15, 0.15)

DOWNLOAD_HINT = (
    'FER2013 is at https://www.kaggle.com/c/challenges-in-representation-'
    'learning-facial-expression-recognition-challenge/data (fer2013.tar.gz) '
    'or https://www.kaggle.com/datasets/msambare/fer2013 (image folders); '
    'FER+ votes at https://github.com/microsoft/FERPlus (fer2013new.csv).')


def describe_forms() -> str:
  return ('Accepted forms: fer2013.csv, fer2013.csv.gz, fer2013.tar.gz/.tgz '
          '(the challenge CSV), an image folder as a directory or .zip with '
          'train/<class>/ and test/<class>/, or a TFDS data dir prepared by '
          'python -m fer_jax.data.tfds_fer2013. ' + DOWNLOAD_HINT)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: `images` uint8 [N, 48, 48], `labels` int32 [N].

  `targets`, float32 [N, classes] rows summing to 1, are the training
  targets of FER+'s vote-based label modes (`ferplus.targets`); None means
  the one-hot `labels`, which are then also each row's argmax.
  """
  images: np.ndarray
  labels: np.ndarray
  targets: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.labels)

  def sha256(self) -> str:
    """The digest of its images, labels and targets, in order: which faces
    a run trained and was evaluated on (dataset.json records it)."""
    digest = hashlib.sha256()
    for array in (self.images, self.labels.astype(np.int32), self.targets):
      if array is not None:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()

  def take(self, indices: np.ndarray) -> 'Split':
    return Split(self.images[indices], self.labels[indices],
                 None if self.targets is None else self.targets[indices])


@dataclasses.dataclass(frozen=True)
class FerData:
  """A dataset: class names and the `train`, `val` and `test` splits."""
  class_names: tuple[str, ...]
  splits: dict[str, Split]
  # Bad records skipped under `on_bad_record="skip"`: reason -> count.
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


class _BadRecords:
  """Raises on a bad record, or counts it when the policy is `skip`."""

  def __init__(self, policy: str):
    if policy not in BAD_RECORD_POLICIES:
      raise UserError(f'data.on_bad_record={policy!r} is not one of '
                      f'{BAD_RECORD_POLICIES}.')
    self.policy = policy
    self.counts: dict[str, int] = {}

  def __call__(self, where: str, reason: str) -> None:
    if self.policy == 'error':
      raise UserError(f'{where}: {reason}. Fix or remove it, or set '
                      '--config.data.on_bad_record=skip to skip bad records.')
    self.counts[reason] = self.counts.get(reason, 0) + 1

  def log(self, path: str) -> None:
    for reason, count in sorted(self.counts.items()):
      logging.warning('Skipped %d bad record(s) in %s: %s', count, path,
                      reason)


# ---------------------------------------------------------------- CSV forms.


# What reading a truncated or corrupt download raises: tarfile, gzip, zip
# and zlib for the archives, a decode error for a file that is not text.
_UNREADABLE = (tarfile.TarError, gzip.BadGzipFile, zipfile.BadZipFile,
               EOFError, zlib.error, UnicodeDecodeError)
_DOWNLOAD_AGAIN = 'a truncated or corrupt download reads so; download it again'


@contextlib.contextmanager
def _open_challenge_csv(path: str) -> Iterator[Iterable[str]]:
  """Yields the challenge CSV's lines, in any of its wrappers; a file that
  cannot be read ends in a UserError, also when its lines are read."""
  try:
    with _challenge_csv_lines(path) as lines:
      yield lines
  except _UNREADABLE as e:
    raise UserError(f'{path} cannot be read ({type(e).__name__}: {e}): '
                    f'{_DOWNLOAD_AGAIN}.') from None


@contextlib.contextmanager
def _challenge_csv_lines(path: str) -> Iterator[Iterable[str]]:
  """What `_open_challenge_csv` yields, its read errors left raw."""
  lower = path.lower()
  if lower.endswith(('.tar.gz', '.tgz', '.tar')):
    # Read as a stream, in one pass: listing the members first decompresses
    # the whole archive once more (a load took 11.6 s with it, 8.8 s without,
    # on a 2-core EPYC). A member of a streamed archive cannot be wrapped in
    # a TextIOWrapper (it asks for seekable()), so its lines are decoded one
    # by one; 'utf-8-sig' strips a byte-order mark, as below.
    with tarfile.open(path, 'r|*') as tar:
      csv_names = []
      for member in tar:
        if not (member.isfile() and member.name.lower().endswith('.csv')):
          continue
        csv_names.append(member.name)
        if len(csv_names) == 1:
          yield (line.decode('utf-8-sig') for line in tar.extractfile(member))
      if len(csv_names) != 1:
        raise UserError(f'{path}: expected one .csv file inside the archive, '
                        f'found {csv_names}. ' + describe_forms())
  elif lower.endswith('.gz'):
    with gzip.open(path, 'rt', encoding='utf-8-sig') as f:
      yield f
  else:
    # utf-8-sig: spreadsheet programs save CSVs with a byte-order mark.
    with open(path, encoding='utf-8-sig') as f:
      yield f


def _parse_pixels(text: str) -> np.ndarray | None:
  """2304 space-separated grey levels -> uint8 [48, 48], or None if malformed."""
  # np.fromstring is 5x faster than str.split here; it warns (raised as an
  # error by the caller's filter) when text stops it before the end.
  try:
    # int64: parsing as int32 wraps values >= 2**32 (2**32 + 1 -> 1).
    pixels = np.fromstring(text, dtype=np.int64, sep=' ')
  except (ValueError, DeprecationWarning):
    return None
  if (pixels.size != IMAGE_SIZE * IMAGE_SIZE or pixels.min() < 0
      or pixels.max() > 255):
    return None
  return pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _csv_fields(line: str) -> list[str]:
  """The fields of one line of the challenge CSV."""
  # Its lines quote nothing, and str.split reads them 8x faster than the
  # csv module: FER2013's tar.gz loads in 6.3 s instead of 7.5-7.9 s on a
  # 2-core EPYC. A line that quotes, as a spreadsheet may save it, goes to
  # the csv module.
  if '"' in line:
    return next(csv.reader([line]), [])
  line = line.rstrip('\r\n')
  return line.split(',') if line else []


@dataclasses.dataclass(frozen=True)
class _CsvRows:
  """The challenge CSV's good rows as arrays, with their 0-based row numbers."""
  images: np.ndarray
  labels: np.ndarray
  splits: np.ndarray
  rows: np.ndarray
  num_rows: int  # Data rows in the file, bad ones included.


def _read_challenge_csv(path: str, bad: _BadRecords) -> _CsvRows:
  images, labels, splits, rows = [], [], [], []
  row_number = -1
  with _open_challenge_csv(path) as stream, warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)
    records = map(_csv_fields, stream)
    header = next(records, None)
    if header is None or [h.strip() for h in header[:3]] != [
        'emotion', 'pixels', 'Usage']:
      raise UserError(f'{path}: not the FER2013 challenge CSV (header '
                      f'{header!r}, expected emotion,pixels,Usage). '
                      + describe_forms())
    for row_number, record in enumerate(records):
      where = f'{path} row {row_number + 2}'  # 1-based, after the header.
      if len(record) != 3:
        bad(where, f'expected 3 fields, found {len(record)}')
        continue
      emotion, pixel_text, usage = record
      if not emotion.strip().isdigit() or int(emotion) >= len(FER2013_CLASSES):
        bad(where, f'unknown emotion {emotion!r} (expected 0-6)')
        continue
      if usage.strip() not in USAGE_TO_SPLIT:
        bad(where, f'unknown Usage {usage!r} (expected one of '
            f'{tuple(USAGE_TO_SPLIT)})')
        continue
      image = _parse_pixels(pixel_text)
      if image is None:
        bad(where, 'pixels are not 2304 integers in 0-255')
        continue
      images.append(image)
      labels.append(int(emotion))
      splits.append(USAGE_TO_SPLIT[usage.strip()])
      rows.append(row_number)
  if not images:
    raise UserError(f'{path}: no usable rows. ' + describe_forms())
  return _CsvRows(np.stack(images), np.asarray(labels, np.int32),
                  np.asarray(splits), np.asarray(rows), row_number + 1)


# ------------------------------------------------------------ FER+ votes.


def check_label_mode(label_mode: str, ferplus_path: str) -> None:
  """config.data.label_mode is known, and only asks for votes with votes."""
  if label_mode not in ferplus.LABEL_MODES:
    raise UserError(f'data.label_mode={label_mode!r} is not one of '
                    f'{ferplus.LABEL_MODES}.')
  if label_mode != 'majority' and not ferplus_path:
    raise UserError(f'data.label_mode={label_mode!r} turns FER+ votes into '
                    'targets: set data.ferplus_path to fer2013new.csv, or '
                    "use label_mode='majority'. " + DOWNLOAD_HINT)


def _read_ferplus_votes(path: str, num_rows: int) -> tuple[np.ndarray,
                                                            np.ndarray]:
  """Returns ([N, 10] int votes, [N] split names) from fer2013new.csv."""
  if not os.path.isfile(path):
    raise UserError(f'FER+ votes file {path} does not exist. ' + DOWNLOAD_HINT)
  try:
    votes, splits = _parse_ferplus_votes(path)
  except UnicodeDecodeError as e:
    raise UserError(f'{path}: not a FER+ votes file, not UTF-8 text ({e}). '
                    + DOWNLOAD_HINT) from None
  if len(votes) != num_rows:
    raise UserError(f'{path} has {len(votes)} rows but the FER2013 CSV has '
                    f'{num_rows}: FER+ is joined by row position, so both '
                    'must be complete, unmodified files.')
  return votes, splits


def _parse_ferplus_votes(path: str) -> tuple[np.ndarray, np.ndarray]:
  """`_read_ferplus_votes` less the row count's check."""
  with open(path, encoding='utf-8') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    expected = ['Usage', 'Image name', *ferplus.VOTE_COLUMNS]
    if header is None or [h.strip() for h in header] != expected:
      raise UserError(f'{path}: not a FER+ votes file (header {header!r}, '
                      f'expected {",".join(expected)}).')
    votes, splits = [], []
    for row_number, record in enumerate(reader):
      try:
        votes.append([int(v) for v in record[2:]])
        if len(record) != len(expected):
          raise ValueError
        splits.append(USAGE_TO_SPLIT[record[0]])
      except (ValueError, KeyError):
        raise UserError(f'{path} row {row_number + 2}: expected Usage, '
                        'image name and 10 integer vote counts.') from None
  return np.asarray(votes, np.int32), np.asarray(splits)


# ----------------------------------------------------------- Image folders.


def _split_from_name(file_name: str) -> str | None:
  prefix = os.path.basename(file_name).split('_', 1)[0]
  return USAGE_TO_SPLIT.get(prefix)


def _decode_grey(data: bytes) -> np.ndarray | None:
  """Image bytes -> uint8 [48, 48] grey, or None if it does not decode."""
  array = np.frombuffer(data, np.uint8)
  image = cv2.imdecode(array, cv2.IMREAD_GRAYSCALE) if array.size else None
  if image is None:
    return None
  if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
    image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE),
                       interpolation=cv2.INTER_AREA)
  return image


def _folder_entries(path: str) -> tuple[list[str], Callable[[str], bytes],
                                        Callable[[], None]]:
  """Lists image-like files of a folder or zip; returns (names, read, close)."""
  if zipfile.is_zipfile(path):
    archive = zipfile.ZipFile(path)
    # Sorted like a directory, so both forms give the same order.
    names = sorted(n for n in archive.namelist() if not n.endswith('/'))
    return names, archive.read, archive.close
  names = []
  for root, _, files in os.walk(path):
    names += [os.path.relpath(os.path.join(root, f), path) for f in files]

  def read(name: str) -> bytes:
    with open(os.path.join(path, name), 'rb') as f:
      return f.read()
  return sorted(names), read, lambda: None


def _class_of(name: str) -> str | None:
  """`[root/]train/happy/x.jpg` -> `happy`; None if no class folder."""
  parts = name.replace('\\', '/').split('/')
  return parts[-2].lower() if len(parts) >= 2 else None


def _read_image_folder(path: str, bad: _BadRecords
                       ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Images, labels and file names of the good image files."""
  names, read, close = _folder_entries(path)
  images, labels, kept_names = [], [], []
  try:
    for name in names:
      base = os.path.basename(name)
      if base.startswith('.') or '__MACOSX' in name:
        continue  # Finder and zip metadata, not data.
      where = f'{path}: {name}'
      class_name = _class_of(name)
      if class_name not in FER2013_CLASSES:
        bad(where, f'not inside a class folder ({", ".join(FER2013_CLASSES)})')
        continue
      if not base.lower().endswith(IMAGE_EXTENSIONS):
        bad(where, 'not an image file')
        continue
      try:
        data = read(name)
      except _UNREADABLE as e:
        bad(where, f'cannot be read ({type(e).__name__}: {e}): '
            f'{_DOWNLOAD_AGAIN}')
        continue
      except OSError as e:
        bad(where, f'cannot be read ({e.strerror or e})')
        continue
      image = _decode_grey(data)
      if image is None:
        bad(where, 'not a readable image (empty, truncated or corrupt)')
        continue
      images.append(image)
      labels.append(FER2013_CLASSES.index(class_name))
      kept_names.append(name)
  finally:
    close()
  if not images:
    raise UserError(f'{path}: no images found in class folders. '
                    + describe_forms())
  return np.stack(images), np.asarray(labels, np.int32), kept_names


def stratified_split(labels: np.ndarray, ratios: Iterable[float],
                     seed: int) -> dict[str, np.ndarray]:
  """Seeded per-class split of indices into train/val/test by `ratios`."""
  ratios = np.asarray(tuple(ratios), np.float64)
  if ratios.shape != (3,) or (ratios < 0).any() or ratios.sum() <= 0:
    raise UserError(f'data.split_ratios={tuple(ratios)} must be three '
                    'non-negative train/val/test fractions.')
  ratios = ratios / ratios.sum()
  rng = np.random.default_rng(seed)
  parts = {split: [] for split in SPLITS}
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    cuts = np.round(np.cumsum(ratios)[:2] * len(members)).astype(int)
    for split, chunk in zip(SPLITS, np.split(members, cuts)):
      parts[split].append(chunk)
  return {split: np.sort(np.concatenate(chunks))
          for split, chunks in parts.items()}


def _folder_split_indices(path: str, names: list[str], labels: np.ndarray,
                          split_ratios: Iterable[float],
                          seed: int) -> dict[str, np.ndarray]:
  """The official split from the file names' prefixes, or a stratified one
  by `split_ratios` when no name has a prefix."""
  name_splits = [_split_from_name(name) for name in names]
  unprefixed = [name for name, split in zip(names, name_splits)
                if split is None]
  if not unprefixed:
    name_splits = np.asarray(name_splits)
    return {s: np.flatnonzero(name_splits == s) for s in SPLITS}
  if len(unprefixed) < len(names):
    # Pooling would move official PrivateTest images into training.
    raise UserError(
        f'{path}: {len(unprefixed)} of {len(names)} image files have no '
        f'{"/".join(f"{usage}_" for usage in USAGE_TO_SPLIT)} file-name '
        f'prefix (e.g. {", ".join(unprefixed[:3])}) while the others have '
        'one, so the official split is unclear: give those files the prefix '
        'of their split or remove them, or remove the prefix from every '
        'file to split all images by config.data.split_ratios.')
  logging.info('%s: no file name carries a split prefix; using a seeded '
               'stratified %s split.', path, tuple(split_ratios))
  return stratified_split(labels, split_ratios, seed)


# ------------------------------------------------------------------- Entry.


def _is_csv_form(path: str) -> bool:
  return path.lower().endswith(('.csv', '.csv.gz', '.tar.gz', '.tgz', '.tar'))


def load(path: str, *, ferplus_path: str = '', label_mode: str = 'majority',
         on_bad_record: str = 'error',
         split_ratios: Iterable[float] = DEFAULT_SPLIT_RATIOS,
         seed: int = 0) -> FerData:
  """Reads FER2013 (or FER+ labels over it) from any accepted form.

  Args:
    path: the challenge CSV (plain, .gz, .tar.gz) or an image folder / zip.
    ferplus_path: optional `fer2013new.csv`; replaces the labels and classes.
    label_mode: how FER+ votes become the train split's labels and
      `targets`, one of `ferplus.LABEL_MODES` (`ferplus.targets`); val and
      test always get majority labels.
    on_bad_record: `error` stops at the first bad record, naming it; `skip`
      skips bad records and counts them in `FerData.skipped` and the log.
    split_ratios: train/val/test fractions for image folders where no file
      name carries a split prefix.
    seed: seed of that stratified split.
  """
  if not path:
    raise UserError('No dataset given: set --config.data.path. '
                    + describe_forms())
  if not os.path.exists(path):
    raise UserError(f'Dataset path {path} does not exist. ' + describe_forms())
  bad = _BadRecords(on_bad_record)
  for extracted in ('fer2013.csv', os.path.join('fer2013', 'fer2013.csv')):
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, extracted)):
      path = os.path.join(path, extracted)
      break

  check_label_mode(label_mode, ferplus_path)
  targets = None  # FER+ training targets, the train split's only.
  if _is_csv_form(path):
    rows = _read_challenge_csv(path, bad)
    images, labels, splits = rows.images, rows.labels, rows.splits
    class_names = FER2013_CLASSES
    if ferplus_path:
      votes, ferplus_splits = _read_ferplus_votes(ferplus_path, rows.num_rows)
      votes, splits = votes[rows.rows], ferplus_splits[rows.rows]
      labels = ferplus.majority_labels(votes)
      if label_mode != 'majority':
        is_train = splits == 'train'
        targets = np.zeros((len(votes), len(ferplus.CLASSES)), np.float32)
        targets[is_train] = ferplus.targets(votes[is_train], label_mode)
        labels = np.where(is_train, np.where(targets.any(axis=1),
                                             targets.argmax(axis=1), -1),
                          labels).astype(np.int32)
      keep = labels >= 0
      logging.info('FER+ %s labels (train; val and test: majority): kept %d '
                   'of %d images (no clear label, unknown or not a face '
                   'dropped).', label_mode, keep.sum(), len(keep))
      images, labels, splits = images[keep], labels[keep], splits[keep]
      if targets is not None:
        targets = targets[keep]
      class_names = ferplus.CLASSES
    split_indices = {s: np.flatnonzero(splits == s) for s in SPLITS}
  elif os.path.isdir(path) or zipfile.is_zipfile(path):
    if ferplus_path:
      raise UserError('FER+ votes are joined to FER2013 by row position, so '
                      'they need the challenge CSV form as data.path, not '
                      f'the image folder {path}.')
    images, labels, names = _read_image_folder(path, bad)
    class_names = FER2013_CLASSES
    split_indices = _folder_split_indices(path, names, labels, split_ratios,
                                          seed)
  elif path.lower().endswith('.zip'):
    raise UserError(f'Dataset path {path} is not a readable zip archive: '
                    f'{_DOWNLOAD_AGAIN}. ' + describe_forms())
  else:
    raise UserError(f'Dataset path {path} is not a recognised form. '
                    + describe_forms())

  bad.log(path)
  return FerData(
      class_names=class_names,
      splits={s: Split(images[i], labels[i],
                       targets[i] if targets is not None and s == 'train'
                       else None)
              for s, i in split_indices.items()},
      skipped=dict(bad.counts))
