"""FER2013 readers: every download form, FER+ votes and bad records."""

import os
import re
import zipfile

import cv2
import numpy as np
import pytest

from conftest import Record, SyntheticFer, block_images, encode
from fer_jax.data import ferplus, sources
from fer_jax.errors import UserError

CLASSES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
FERPLUS_CLASSES = ('neutral', 'happiness', 'surprise', 'sadness', 'anger',
                   'disgust', 'fear', 'contempt')
SPLIT_OF = {'Training': 'train', 'PublicTest': 'val', 'PrivateTest': 'test'}


def _in_split(records: list[Record], split: str) -> list[Record]:
  return [r for r in records if SPLIT_OF[r.usage] == split]


def _check_arrays(split: sources.Split) -> None:
  assert split.images.dtype == np.uint8
  assert split.images.ndim == 3 and split.images.shape[1:] == (48, 48)
  assert split.labels.dtype == np.int32
  assert len(split.images) == len(split.labels)


def _assert_split(split: sources.Split, records: list[Record]) -> None:
  """`split` holds exactly `records`, in their order."""
  _check_arrays(split)
  assert len(split) == len(records)
  for image, label, record in zip(split.images, split.labels, records):
    np.testing.assert_array_equal(image, record.image)
    assert label == record.label


def _assert_ordered(data: sources.FerData, records: list[Record]) -> None:
  """`data` is `records` split by Usage, in row order, with FER2013 classes."""
  assert data.class_names == CLASSES
  assert set(data.splits) == {'train', 'val', 'test'}
  for split in data.splits:
    _assert_split(data.splits[split], _in_split(records, split))


def _match(split: sources.Split, records: list[Record], tol: int) -> list[int]:
  """Pairs loaded images 1:1 with `records` in any order, within `tol`."""
  _check_arrays(split)
  expected = np.stack([r.image for r in records]).astype(np.int16)
  diffs = np.abs(split.images.astype(np.int16)[:, None] - expected[None])
  diffs = diffs.max(axis=(2, 3))
  best = diffs.argmin(axis=1)
  assert diffs[np.arange(len(best)), best].max() <= tol
  assert sorted(best.tolist()) == list(range(len(records)))
  assert split.labels.tolist() == [records[i].label for i in best]
  return best.tolist()


def _assert_unordered(data: sources.FerData, records: list[Record],
                      tol: int = 0) -> None:
  assert data.class_names == CLASSES
  assert set(data.splits) == {'train', 'val', 'test'}
  for split in data.splits:
    _match(data.splits[split], _in_split(records, split), tol)


def _assert_same(a: sources.FerData, b: sources.FerData) -> None:
  assert a.class_names == b.class_names
  assert set(a.splits) == set(b.splits)
  for split in a.splits:
    np.testing.assert_array_equal(a.splits[split].images,
                                  b.splits[split].images)
    np.testing.assert_array_equal(a.splits[split].labels,
                                  b.splits[split].labels)


# ------------------------------------------------------------------ Forms.


def test_class_names_are_in_fer2013_emotion_order():
  assert sources.FER2013_CLASSES == CLASSES
  assert ferplus.CLASSES == FERPLUS_CLASSES


@pytest.mark.parametrize('form', [
    'csv', 'csv.gz', 'tar.gz', 'tgz', 'dir', 'csv with byte-order mark',
    'tar.gz with quoted fields and CRLF', 'extracted tar'])
def test_challenge_csv_forms_give_the_rows_by_usage(synthetic_fer, form):
  fer = synthetic_fer
  if form == 'csv':
    path = fer.write_csv()
  elif form == 'csv.gz':
    path = fer.write_csv_gz()
  elif form in ('tar.gz', 'tgz'):
    path = fer.write_tar(f'fer2013.{form}')
  elif form == 'csv with byte-order mark':
    path = str(fer.root / 'fer2013.csv')
    with open(path, 'w', encoding='utf-8-sig') as f:
      f.write(fer.csv_text())
  elif form == 'tar.gz with quoted fields and CRLF':
    # As a spreadsheet program may save it; an archive's lines keep their
    # '\r' (a plain file is read with universal newlines).
    quoted = ['"' + line.replace(',', '","') + '"' for line in fer.csv_lines()]
    text = fer.csv_text(quoted[:5] + fer.csv_lines()[5:])
    path = fer.write_tar(members={
        'fer2013/fer2013.csv': text.replace('\n', '\r\n').encode()})
  elif form == 'extracted tar':
    fer.write_csv('download/fer2013/fer2013.csv')
    path = str(fer.root / 'download')
  else:
    fer.write_csv('download/fer2013.csv')
    path = str(fer.root / 'download')
  data = sources.load(path)
  _assert_ordered(data, fer.records)
  assert data.skipped == {}
  assert [len(data.splits[s]) for s in ('train', 'val', 'test')] == [21, 7, 7]
  assert data.num_classes == 7


def test_csv_emotion_index_is_the_class_index(make_synthetic_fer):
  fer = make_synthetic_fer()
  lines = [f'{e},{" ".join([str(10 * e)] * 2304)},PrivateTest'
           for e in range(7)]
  data = sources.load(fer.write_csv(lines=lines))
  test = data.splits['test']
  assert test.labels.tolist() == list(range(7))
  assert test.images[:, 0, 0].tolist() == [0, 10, 20, 30, 40, 50, 60]
  assert [data.class_names[i] for i in test.labels] == list(CLASSES)
  assert len(data.splits['train']) == len(data.splits['val']) == 0


@pytest.mark.parametrize('form,ext,tol', [('dir', '.png', 0),
                                          ('zip', '.png', 0),
                                          ('dir', '.jpg', 4),
                                          ('zip', '.jpg', 4)])
def test_image_folder_forms_split_by_file_name_prefix(synthetic_fer, form, ext,
                                                      tol):
  fer = synthetic_fer
  if form == 'dir':
    path = fer.write_folder(ext=ext)
  else:
    path = fer.write_zip(ext=ext)
  data = sources.load(path)
  # Class folders map to the CSV's emotion indices; PublicTest_ and
  # PrivateTest_ in test/ become val and test.
  _assert_unordered(data, fer.records, tol)
  assert data.skipped == {}


def test_all_forms_give_the_same_data(synthetic_fer):
  fer = synthetic_fer
  csv_data = sources.load(fer.write_csv())
  for path in (fer.write_csv_gz(), fer.write_tar()):
    _assert_same(sources.load(path), csv_data)
  folder = sources.load(fer.write_folder(ext='.png'))
  zipped = sources.load(fer.write_zip(ext='.png'))
  # The zip's entries are in a shuffled order, yet it reads like the folder.
  _assert_same(zipped, folder)
  def by_pixels(split):
    return sorted(zip(map(bytes, split.images), split.labels.tolist()))
  for split in ('train', 'val', 'test'):
    assert by_pixels(csv_data.splits[split]) == by_pixels(folder.splits[split])


@pytest.mark.parametrize('form', ['dir', 'zip'])
def test_image_folder_under_a_top_folder_with_capitalised_classes(
    synthetic_fer, form):
  fer = synthetic_fer
  files = {f'fer2013/{name.replace("/happy/", "/Happy/")}': data
           for name, data in fer.folder_files('.png').items()}
  if form == 'dir':
    path = str(fer.root / 'nested')
    for name, data in files.items():
      os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
      with open(os.path.join(path, name), 'wb') as f:
        f.write(data)
  else:
    path = str(fer.root / 'nested.zip')
    with zipfile.ZipFile(path, 'w') as archive:
      for name, data in files.items():
        archive.writestr(name, data)
  _assert_unordered(sources.load(path), fer.records)


# ------------------------------------------------------- Stratified split.


@pytest.fixture
def unprefixed(make_synthetic_fer) -> SyntheticFer:
  """140 images, 20 per class, whose file names carry no split prefix."""
  return make_synthetic_fer(per_usage=(20, 0, 0), seed=3)


def _membership(data: sources.FerData,
                records: list[Record]) -> dict[str, set[int]]:
  """Split -> indices of `records` in it, matched by exact pixels."""
  index = {r.image.tobytes(): i for i, r in enumerate(records)}
  assert len(index) == len(records)
  members = {}
  for name, split in data.splits.items():
    _check_arrays(split)
    found = [index[image.tobytes()] for image in split.images]
    assert split.labels.tolist() == [records[i].label for i in found]
    assert len(set(found)) == len(found)
    members[name] = set(found)
  return members


def test_unprefixed_folder_is_split_stratified_by_ratios(unprefixed):
  data = sources.load(unprefixed.write_folder(prefixes=False), seed=0)
  assert data.class_names == CLASSES
  members = _membership(data, unprefixed.records)
  # Disjoint and complete.
  assert not members['train'] & members['val']
  assert not members['train'] & members['test']
  assert not members['val'] & members['test']
  assert members['train'] | members['val'] | members['test'] == set(range(140))
  # 70/15/15 within every class.
  for split, count in (('train', 14), ('val', 3), ('test', 3)):
    counts = np.bincount(data.splits[split].labels, minlength=7)
    assert counts.tolist() == [count] * 7, split


def test_stratified_split_follows_split_ratios(unprefixed):
  data = sources.load(unprefixed.write_folder(prefixes=False),
                      split_ratios=(0.5, 0.25, 0.25), seed=0)
  for split, count in (('train', 10), ('val', 5), ('test', 5)):
    assert np.bincount(data.splits[split].labels,
                       minlength=7).tolist() == [count] * 7


def test_stratified_split_is_seeded(unprefixed):
  path = unprefixed.write_folder(prefixes=False)
  first = sources.load(path, seed=7)
  _assert_same(sources.load(path, seed=7), first)
  # The same seed gives the same split from the zip, whatever its order.
  _assert_same(sources.load(unprefixed.write_zip(ext='.png', prefixes=False),
                            seed=7), first)
  other = sources.load(path, seed=8)
  a = _membership(first, unprefixed.records)
  b = _membership(other, unprefixed.records)
  assert a['train'] != b['train'] and a['test'] != b['test']
  assert len(b['train']) == len(a['train']) == 98


@pytest.mark.parametrize('form', ['dir', 'zip'])
def test_some_unprefixed_files_among_prefixed_ones_are_a_user_error(
    synthetic_fer, form):
  # Pooling them all would train on official PrivateTest images.
  fer = synthetic_fer
  image = encode(fer.records[0].image, '.png')
  extra = {f'test/happy/{n}.png': image for n in ('im0', 'im1', 'im2', 'im3')}
  path = (fer.write_folder(extra=extra) if form == 'dir'
          else fer.write_zip(ext='.png', extra=extra))
  with pytest.raises(UserError) as error:
    sources.load(path)
  message = str(error.value)
  assert message.startswith(
      f'{path}: 4 of 39 image files have no Training_/PublicTest_/'
      'PrivateTest_ file-name prefix (e.g. test/happy/im0.png, '
      'test/happy/im1.png, test/happy/im2.png) while the others have one'
  ), message
  assert 'im3' not in message and 'config.data.split_ratios' in message


@pytest.mark.parametrize('ratios', [(0.7, 0.3), (0.7, -0.1, 0.4), (0, 0, 0)])
def test_bad_split_ratios_are_user_errors(unprefixed, ratios):
  path = unprefixed.write_folder(prefixes=False)
  with pytest.raises(UserError, match='split_ratios'):
    sources.load(path, split_ratios=ratios)


# ------------------------------------------------------------------- FER+.

# (votes: neutral happiness surprise sadness anger disgust fear contempt
#  unknown NF, FER+ Usage, image name, expected label or -1 when dropped).
FERPLUS_ROWS = [
    ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], 'Training', 'fer0000000.png', -1),
    ([6, 0, 1, 1, 0, 0, 0, 0, 2, 0], 'Training', 'fer0000001.png', 0),
    ([0, 10, 0, 0, 0, 0, 0, 0, 0, 0], 'PublicTest', 'fer0000002.png', 1),
    # Only 2 of 2 votes once the single votes are removed.
    ([2, 1, 1, 1, 1, 1, 1, 1, 1, 0], 'Training', 'fer0000003.png', 0),
    ([0, 0, 0, 0, 0, 0, 0, 0, 10, 0], 'Training', 'fer0000004.png', -1),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], 'Training', '', -1),
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], 'PrivateTest', 'fer0000006.png', -1),
    ([0, 0, 0, 0, 0, 0, 0, 7, 3, 0], 'PrivateTest', 'fer0000007.png', 7),
    # unknown and NF votes count in the total.
    ([0, 0, 0, 6, 0, 0, 0, 0, 4, 0], 'Training', 'fer0000008.png', 3),
    ([0, 0, 0, 0, 5, 0, 0, 0, 5, 0], 'PublicTest', 'fer0000009.png', -1),
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 'Training', 'fer0000010.png', -1),
    ([0, 0, 3, 0, 0, 2, 0, 0, 0, 0], 'PublicTest', 'fer0000011.png', 2),
    ([0, 0, 0, 0, 0, 4, 0, 0, 0, 6], 'Training', '', -1),
    ([0, 0, 0, 0, 0, 0, 7, 0, 0, 3], 'PrivateTest', 'fer0000013.png', 6),
    ([0, 0, 0, 0, 0, 3, 0, 0, 0, 1], 'Training', 'fer0000014.png', 5),
    ([0, 0, 0, 0, 9, 0, 0, 0, 0, 1], 'PrivateTest', 'fer0000015.png', 4),
]


def test_ferplus_majority_rules():
  votes = np.array([row[0] for row in FERPLUS_ROWS])
  labels = ferplus.majority_labels(votes)
  assert labels.tolist() == [row[3] for row in FERPLUS_ROWS]


def _write_ferplus(fer: SyntheticFer, rows=FERPLUS_ROWS,
                   name: str = 'fer2013new.csv') -> str:
  lines = ['Usage,Image name,neutral,happiness,surprise,sadness,anger,'
           'disgust,fear,contempt,unknown,NF']
  lines += [f'{usage},{image},{",".join(map(str, votes))}'
            for votes, usage, image, _ in rows]
  path = fer.root / name
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


@pytest.fixture
def ferplus_fer(make_synthetic_fer) -> SyntheticFer:
  """16 CSV rows (one per FERPLUS_ROWS row) with usages unlike FER+'s."""
  fer = make_synthetic_fer(per_usage=(1, 1, 1), seed=5)
  fer.records = fer.records[:len(FERPLUS_ROWS)]
  return fer


def _expected_ferplus(fer: SyntheticFer, split: str, drop=()) -> list[Record]:
  """CSV images under FER+ labels and Usage, joined by row position."""
  return [Record(record.image, row[3], row[1])
          for i, (record, row) in enumerate(zip(fer.records, FERPLUS_ROWS))
          if row[3] >= 0 and SPLIT_OF[row[1]] == split and i not in drop]


def test_ferplus_relabels_the_csv_by_row_position(ferplus_fer):
  fer = ferplus_fer
  # The CSV's own Usage differs from FER+'s on some rows; FER+ decides.
  assert any(SPLIT_OF[r.usage] != SPLIT_OF[row[1]]
             for r, row in zip(fer.records, FERPLUS_ROWS))
  data = sources.load(fer.write_tar(), ferplus_path=_write_ferplus(fer))
  assert data.class_names == FERPLUS_CLASSES
  assert data.num_classes == 8
  for split in ('train', 'val', 'test'):
    _assert_split(data.splits[split], _expected_ferplus(fer, split))
  assert [len(data.splits[s]) for s in ('train', 'val', 'test')] == [4, 2, 3]


def test_ferplus_join_survives_skipped_csv_rows(ferplus_fer):
  fer = ferplus_fer
  lines = fer.csv_lines()
  lines[1] = lines[1].rsplit(' ', 1)[0] + ',' + fer.records[1].usage  # 2303.
  data = sources.load(fer.write_csv(lines=lines),
                      ferplus_path=_write_ferplus(fer), on_bad_record='skip')
  assert sum(data.skipped.values()) == 1
  for split in ('train', 'val', 'test'):
    _assert_split(data.splits[split], _expected_ferplus(fer, split, drop={1}))


@pytest.mark.parametrize('rows', [FERPLUS_ROWS[:-1],
                                  FERPLUS_ROWS + FERPLUS_ROWS[:1]])
def test_ferplus_with_another_row_count_is_a_user_error(ferplus_fer, rows):
  ferplus = _write_ferplus(ferplus_fer, rows)
  with pytest.raises(UserError, match='row position') as error:
    sources.load(ferplus_fer.write_csv(), ferplus_path=ferplus)
  message = str(error.value)
  assert ferplus in message
  counts = re.findall(r'\b\d+\b', message.replace(ferplus, ''))
  assert str(len(rows)) in counts and str(len(FERPLUS_ROWS)) in counts


def test_ferplus_file_that_is_not_text_is_a_user_error(ferplus_fer, tmp_path):
  votes = tmp_path / 'fer2013new.csv'
  votes.write_bytes(bytes(range(128, 256)) * 4)
  with pytest.raises(UserError, match=rf'{re.escape(str(votes))}: not a FER\+ '
                     'votes file, not UTF-8 text'):
    sources.load(ferplus_fer.write_csv(), ferplus_path=str(votes))


@pytest.mark.parametrize('form', ['dir', 'zip'])
def test_ferplus_with_an_image_folder_is_a_user_error(ferplus_fer, form):
  fer = ferplus_fer
  path = fer.write_folder() if form == 'dir' else fer.write_zip()
  with pytest.raises(UserError, match='row position') as error:
    sources.load(path, ferplus_path=_write_ferplus(fer))
  assert path in str(error.value)


def test_ferplus_bad_files_are_user_errors(ferplus_fer):
  fer = ferplus_fer
  csv_path = fer.write_csv()
  with pytest.raises(UserError, match='does not exist'):
    sources.load(csv_path, ferplus_path=str(fer.root / 'missing.csv'))
  with pytest.raises(UserError, match='label_mode'):
    sources.load(csv_path, ferplus_path=_write_ferplus(fer),
                 label_mode='soft')
  bad_votes = [(['x'] + row[0][1:], *row[1:]) if i == 3 else row
               for i, row in enumerate(FERPLUS_ROWS)]
  with pytest.raises(UserError, match='row 5'):
    sources.load(csv_path, ferplus_path=_write_ferplus(fer, bad_votes))
  bad_usage = [(row[0], 'Validation', *row[2:]) if i == 3 else row
               for i, row in enumerate(FERPLUS_ROWS)]
  with pytest.raises(UserError, match='row 5'):
    sources.load(csv_path, ferplus_path=_write_ferplus(fer, bad_usage))
  header = fer.root / 'header.csv'
  header.write_text('emotion,pixels,Usage\n')
  with pytest.raises(UserError, match='not a FER\\+ votes file'):
    sources.load(csv_path, ferplus_path=str(header))


# ------------------------------------------------------------ Bad records.


def _bad_line(record: Record, kind: str) -> str:
  pixels = [str(p) for p in record.image.ravel()]
  label, usage = str(record.label), record.usage
  if kind == '2303 pixels':
    pixels = pixels[:-1]
  elif kind == '2305 pixels':
    pixels = pixels + ['7']
  elif kind == 'text in pixels':
    pixels[100] = 'abc'
  elif kind == 'text after pixels':
    pixels[-1] += 'x'
  elif kind == 'value 256':
    pixels[1000] = '256'
  elif kind == 'value -1':
    pixels[5] = '-1'
  elif kind == 'value 2**32+1':
    pixels[5] = str(2**32 + 1)  # Wraps to 1 if parsed as int32.
  elif kind == 'emotion 7':
    label = '7'
  elif kind == 'emotion text':
    label = 'happy'
  elif kind == 'unknown Usage':
    usage = 'Validation'
  elif kind == 'two fields':
    return f'{label},{" ".join(pixels)}'
  else:
    raise ValueError(kind)
  return f'{label},{" ".join(pixels)},{usage}'


BAD_CSV_KINDS = ['2303 pixels', '2305 pixels', 'text in pixels',
                 'text after pixels', 'value 256', 'value -1',
                 'value 2**32+1', 'emotion 7', 'emotion text',
                 'unknown Usage', 'two fields']


@pytest.mark.parametrize('kind', BAD_CSV_KINDS)
def test_bad_csv_row_is_a_user_error_naming_file_and_row(synthetic_fer, kind):
  fer = synthetic_fer
  lines = fer.csv_lines()
  lines[4] = _bad_line(fer.records[4], kind)
  path = fer.write_csv(lines=lines)
  with pytest.raises(UserError, match='on_bad_record=skip') as error:
    sources.load(path)
  # Data row 4 is line 6 of the file, after the header.
  assert f'{path} row 6:' in str(error.value)


@pytest.mark.parametrize('kind', BAD_CSV_KINDS)
def test_bad_csv_row_is_skipped_and_counted(synthetic_fer, kind):
  fer = synthetic_fer
  lines = fer.csv_lines()
  lines[4] = _bad_line(fer.records[4], kind)
  data = sources.load(fer.write_csv(lines=lines), on_bad_record='skip')
  assert sum(data.skipped.values()) == 1
  _assert_ordered(data, fer.records[:4] + fer.records[5:])


def test_many_bad_csv_rows_are_counted_by_reason(synthetic_fer):
  fer = synthetic_fer
  lines = fer.csv_lines()
  bad_rows = range(2, 2 + 2 * len(BAD_CSV_KINDS), 2)
  for row, kind in zip(bad_rows, BAD_CSV_KINDS):
    lines[row] = _bad_line(fer.records[row], kind)
  members = {'fer2013/fer2013.csv': fer.csv_text(lines).encode()}
  data = sources.load(fer.write_tar(members=members), on_bad_record='skip')
  assert sum(data.skipped.values()) == len(BAD_CSV_KINDS)
  assert len(data.skipped) > 1  # Distinct reasons are counted apart.
  _assert_ordered(data, [r for i, r in enumerate(fer.records)
                         if i not in bad_rows])


def test_unknown_bad_record_policy_is_a_user_error(synthetic_fer):
  with pytest.raises(UserError, match='on_bad_record'):
    sources.load(synthetic_fer.write_csv(), on_bad_record='ignore')


def test_csv_with_only_bad_rows_is_a_user_error(synthetic_fer):
  fer = synthetic_fer
  lines = [_bad_line(r, 'emotion 7') for r in fer.records]
  with pytest.raises(UserError, match='no usable rows'):
    sources.load(fer.write_csv(lines=lines), on_bad_record='skip')


def _truncated_jpeg() -> bytes:
  noise = np.random.default_rng(0).integers(0, 256, (48, 48), np.uint8)
  data = encode(noise, '.jpg')
  assert cv2.imdecode(np.frombuffer(data, np.uint8),
                      cv2.IMREAD_GRAYSCALE) is not None
  return data[:len(data) // 2]


BAD_FILES = {
    'zero-byte jpg': ('train/happy/Training_9001.jpg', b''),
    'truncated jpg': ('test/sad/PrivateTest_9002.jpg', _truncated_jpeg()),
    'text file': ('train/fear/notes.txt', b'collected in 2013\n'),
    'text as jpg': ('test/angry/PublicTest_9003.jpg', b'not an image\n'),
    'no class folder': ('train/Training_9004.png', b''),
    'image named .txt': ('train/happy/Training_9005.txt',
                         encode(np.zeros((48, 48), np.uint8), '.png')),
}


def _with_bad_file(fer, form, kind):
  """The image folder of `fer` as a directory or a zip, with BAD_FILES[kind]."""
  extra = dict([BAD_FILES[kind]])
  if form == 'dir':
    return fer.write_folder(extra=extra)
  return fer.write_zip(ext='.png', extra=extra)


@pytest.mark.parametrize('form', ['dir', 'zip'])
@pytest.mark.parametrize('kind', list(BAD_FILES))
def test_bad_image_file_is_a_user_error_naming_it(synthetic_fer, form, kind):
  path = _with_bad_file(synthetic_fer, form, kind)
  with pytest.raises(UserError, match='on_bad_record=skip') as error:
    sources.load(path)
  name = BAD_FILES[kind][0]
  assert path in str(error.value)
  assert name in str(error.value).replace(os.sep, '/')


@pytest.mark.parametrize('form', ['dir', 'zip'])
@pytest.mark.parametrize('kind', list(BAD_FILES))
def test_bad_image_file_is_skipped_and_counted(synthetic_fer, form, kind):
  path = _with_bad_file(synthetic_fer, form, kind)
  data = sources.load(path, on_bad_record='skip')
  assert sum(data.skipped.values()) == 1
  _assert_unordered(data, synthetic_fer.records)


def test_all_bad_image_files_are_counted(synthetic_fer):
  fer = synthetic_fer
  path = fer.write_zip(ext='.jpg', extra=dict(BAD_FILES.values()))
  data = sources.load(path, on_bad_record='skip')
  assert sum(data.skipped.values()) == len(BAD_FILES)
  _assert_unordered(data, fer.records, tol=4)


def _truncated(path: str) -> str:
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  return path


@pytest.mark.parametrize('form', ['tar.gz', 'csv.gz', 'zip'])
def test_truncated_download_is_a_user_error(synthetic_fer, form):
  write = {'tar.gz': synthetic_fer.write_tar,
           'csv.gz': synthetic_fer.write_csv_gz,
           'zip': synthetic_fer.write_zip}[form]
  path = _truncated(write())
  with pytest.raises(UserError, match='truncated or corrupt download reads '
                     'so; download it again') as error:
    sources.load(path)
  assert path in str(error.value)


@pytest.mark.parametrize('name', ['fer2013.tar.gz', 'fer2013.csv'])
def test_file_that_is_no_archive_or_text_is_a_user_error(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(bytes(range(256)) * 4)
  with pytest.raises(UserError, match=rf'{re.escape(str(path))} cannot be '
                     r'read \((ReadError|UnicodeDecodeError): '):
    sources.load(str(path))


def test_corrupt_member_of_a_zip_is_a_bad_record(synthetic_fer):
  path = synthetic_fer.write_zip(ext='.png')
  with zipfile.ZipFile(path) as archive:
    first = min(archive.infolist(), key=lambda info: info.header_offset)
  with open(path, 'r+b') as f:  # Its local header's signature.
    f.seek(first.header_offset)
    f.write(b'\0\0\0\0')
  with pytest.raises(UserError, match=rf'{re.escape(first.filename)}: cannot '
                     r'be read \(BadZipFile: .*download it again\. .*'
                     'on_bad_record=skip'):
    sources.load(path)
  data = sources.load(path, on_bad_record='skip')
  assert sum(data.skipped.values()) == 1
  assert sum(map(len, data.splits.values())) == len(synthetic_fer.records) - 1


def test_metadata_files_are_ignored(synthetic_fer):
  fer = synthetic_fer
  path = fer.write_zip(ext='.png', extra={
      '__MACOSX/train/happy/._Training_1.png': b'\x00\x05',
      'train/happy/.DS_Store': b'\x00\x00'})
  data = sources.load(path)
  assert data.skipped == {}
  _assert_unordered(data, fer.records)


@pytest.mark.parametrize('form', ['dir', 'zip'])
def test_other_sizes_and_colour_images_are_converted(synthetic_fer, form):
  fer = synthetic_fer
  new = block_images(3, seed=99)
  originals = [Record(new[0], 0, 'Training'), Record(new[1], 2, 'PrivateTest'),
               Record(new[2], 4, 'PublicTest')]
  big = cv2.resize(originals[0].image, (64, 64),
                   interpolation=cv2.INTER_NEAREST)
  grey_rgb = cv2.cvtColor(originals[1].image, cv2.COLOR_GRAY2BGR)
  colour = np.stack([originals[2].image, 255 - originals[2].image,
                     originals[2].image // 2], axis=-1)
  extra = {'train/angry/Training_9001.png': encode(big, '.png'),
           'test/fear/PrivateTest_9002.png': encode(grey_rgb, '.png'),
           'test/sad/PublicTest_9003.png': encode(colour, '.png')}
  if form == 'dir':
    path = fer.write_folder(extra=extra)
  else:
    path = fer.write_zip(ext='.png', extra=extra)
  data = sources.load(path)
  assert data.skipped == {}
  assert [len(data.splits[s]) for s in ('train', 'val', 'test')] == [22, 8, 8]
  expected_colour = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
  # 64x64 is resized back to 48x48 (block edges blur), RGB becomes grey.
  for expected, record, mean_tol, max_tol in (
      (originals[0].image, originals[0], 8, 255),
      (originals[1].image, originals[1], 0, 0),
      (expected_colour, originals[2], 1, 1)):
    split = data.splits[SPLIT_OF[record.usage]]
    diffs = np.abs(split.images.astype(int) - expected)
    # The converted image is the one with this class and these pixels.
    candidates = np.flatnonzero(split.labels == record.label)
    best = candidates[diffs[candidates].mean(axis=(1, 2)).argmin()]
    assert diffs[best].mean() <= mean_tol
    assert diffs[best].max() <= max_tol


# ------------------------------------------------------- Paths and forms.


def test_missing_path_is_a_user_error(tmp_path):
  path = str(tmp_path / 'fer2013.csv')
  with pytest.raises(UserError, match='Accepted forms') as error:
    sources.load(path)
  assert path in str(error.value) and 'does not exist' in str(error.value)


def test_empty_path_is_a_user_error():
  with pytest.raises(UserError, match='Accepted forms') as error:
    sources.load('')
  assert 'data.path' in str(error.value)


@pytest.mark.parametrize('name,content', [
    ('fer2013.json', b'{"emotion": 3}'),
    ('fer2013.zip', b'not really a zip'),
    ('face.jpg', b'\xff\xd8\xff'),
])
def test_unrecognised_file_is_a_user_error(tmp_path, name, content):
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(UserError, match='Accepted forms') as error:
    sources.load(str(path))
  message = str(error.value)
  assert str(path) in message
  for form in ('fer2013.csv', '.csv.gz', 'fer2013.tar.gz', '.zip',
               'train/<class>/'):
    assert form in message


def test_csv_with_another_header_is_a_user_error(tmp_path):
  path = tmp_path / 'fer2013.csv'
  path.write_text('label,image\n3,1 2 3\n')
  with pytest.raises(UserError, match='Accepted forms') as error:
    sources.load(str(path))
  assert 'emotion,pixels,Usage' in str(error.value)


def test_archive_without_one_csv_is_a_user_error(synthetic_fer):
  fer = synthetic_fer
  text = fer.csv_text().encode()
  for members in ({'fer2013/README': b'hi'},
                  {'a/fer2013.csv': text, 'b/fer2013.csv': text}):
    path = fer.write_tar(members=members)
    with pytest.raises(UserError, match='one .csv file') as error:
      sources.load(path)
    assert path in str(error.value)


def test_empty_image_folder_is_a_user_error(tmp_path):
  (tmp_path / 'images' / 'train' / 'happy').mkdir(parents=True)
  with pytest.raises(UserError, match='no images'):
    sources.load(str(tmp_path / 'images'))


# Vote-based FER+ targets, checked by hand against the reference's rules
# (and, once, against a transcription of microsoft/FERPlus's _process_data
# on all 35,887 rows of the real fer2013new.csv: identical).
#  votes: neutral happiness surprise sadness anger disgust fear contempt
#  unknown NF -> {mode: expected target over the 8 emotions, None: dropped}.
TARGET_ROWS = [
    ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
     {'probability': [1, 0], 'multi_target': [1, 0]}),
    # A tie: no majority, but two leading emotions with all the votes.
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0],
     {'probability': [.5, .5], 'multi_target': [.5, .5]}),
    # The single vote goes; 4 + 3 = 7 of 9 votes reach 75%: surprise's 2
    # are not needed. For multi_target, 2 < 30% of 9.
    ([4, 3, 2, 1, 0, 0, 0, 0, 0, 0],
     {'probability': [4 / 7, 3 / 7], 'multi_target': [4 / 7, 3 / 7]}),
    # unknown / NF leading drops the row.
    ([0, 0, 0, 0, 0, 0, 0, 0, 6, 4], {'probability': None,
                                      'multi_target': None}),
    ([3, 0, 0, 0, 0, 0, 0, 0, 3, 4], {'probability': None,
                                      'multi_target': None}),
    # Tied with unknown: neutral alone holds only half of the votes; for
    # multi_target both pass 30% and neutral, first, leads.
    ([5, 0, 0, 0, 0, 0, 0, 0, 5, 0], {'probability': None,
                                      'multi_target': [1, 0]}),
    # Five emotions tied: more than three leaders drops it.
    ([2, 2, 2, 2, 2, 0, 0, 0, 0, 0], {'probability': None,
                                      'multi_target': None}),
    # Three emotions: 4 + 3 + 3 = 10 of 12 > 75%, three at most. Only
    # neutral has 30% of the votes, which is not more than half of them.
    ([4, 3, 3, 2, 0, 0, 0, 0, 0, 0],
     {'probability': [.4, .3, .3], 'multi_target': None}),
]


@pytest.mark.parametrize('mode', ['probability', 'crossentropy',
                                  'multi_target', 'majority'])
def test_ferplus_targets_follow_the_reference_rules(mode):
  votes = np.array([row[0] for row in TARGET_ROWS])
  targets = ferplus.targets(votes, mode)
  assert targets.shape == (len(TARGET_ROWS), 8)
  assert targets.dtype == np.float32
  for got, (_, expected) in zip(targets, TARGET_ROWS):
    if mode == 'majority':
      want = None
    else:
      want = expected['probability' if mode == 'crossentropy' else mode]
    if want is None:
      if mode == 'majority':
        continue  # Checked against majority_labels below.
      assert not got.any()
    else:
      np.testing.assert_allclose(got, np.pad(want, (0, 8 - len(want))),
                                 rtol=1e-6)
  if mode == 'majority':
    labels = ferplus.majority_labels(votes)
    assert (targets.argmax(1)[labels >= 0] == labels[labels >= 0]).all()
    assert (targets.sum(1) == (labels >= 0)).all()


def test_ferplus_vote_modes_relabel_train_only(ferplus_fer):
  fer = ferplus_fer
  tar, votes_csv = fer.write_tar(), _write_ferplus(fer)
  majority = sources.load(tar, ferplus_path=votes_csv)
  data = sources.load(tar, ferplus_path=votes_csv, label_mode='crossentropy')
  # Val and test keep their majority labels and have no targets.
  for split in ('val', 'test'):
    _assert_split(data.splits[split], _expected_ferplus(fer, split))
    assert data.splits[split].targets is None
  # Train: row 0 (4 neutral, 3 anger, 2 disgust; single votes out) is kept
  # with its vote distribution, though it has no majority.
  train = data.splits['train']
  assert len(train) == len(majority.splits['train']) + 1
  np.testing.assert_allclose(train.targets.sum(1), 1, rtol=1e-6)
  assert (train.labels == train.targets.argmax(1)).all()
  first = train.targets[0]
  np.testing.assert_allclose(first[[0, 4]], [4 / 7, 3 / 7], rtol=1e-6)
  np.testing.assert_array_equal(train.images[0], fer.records[0].image)
  assert train.take(np.array([0])).targets.shape == (1, 8)


def test_vote_label_mode_without_votes_is_a_user_error(synthetic_fer):
  with pytest.raises(UserError, match='ferplus_path'):
    sources.load(synthetic_fer.write_csv(), label_mode='probability')
  with pytest.raises(UserError, match='label_mode'):
    sources.load(synthetic_fer.write_csv(), label_mode='votes')
