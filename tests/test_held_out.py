"""Teachers and init_from runs that trained on a run's val or test faces are
refused (fer_jax.train.held_out)."""

import dataclasses

import numpy as np
import pytest

from conftest import SyntheticFer
from fer_jax import rundir
from fer_jax.config import default_config
from fer_jax.data import dataset, sources
from fer_jax.errors import UserError
from fer_jax.train import held_out, loop
from test_loop import tiny_config


def _config(data_path, split_seed=0):
  config = default_config()
  config.data.path = data_path
  config.data.split_seed = split_seed
  return config


def _source_run(path, config, faces_recorded=True):
  """A run directory as fer_jax.main leaves it before its first checkpoint,
  of `config`'s data; without train_faces.npy, as before it was recorded."""
  run = rundir.RunDir(str(path))
  run.save_config(config)
  data = dataset.load(config.data)
  run.write_json(rundir.DATASET, dataset.identity(data))
  if faces_recorded:
    run.write_array(rundir.TRAIN_FACES,
                    dataset.face_digests(data.splits['train'].images))
  return str(path)


def _two_test_faces_in_training(records):
  """`records` with two PrivateTest faces moved to Training, and their
  rows."""
  moved_rows = [i for i, r in enumerate(records)
                if r.usage == 'PrivateTest'][:2]
  moved = list(records)
  for i in moved_rows:
    moved[i] = dataclasses.replace(records[i], usage='Training')
  return moved, moved_rows


def _check(workdir, data_config, read_data=None):
  """held_out.check as loop calls it, with `read_data` given or read."""
  read_data = dataset.read(data_config) if read_data is None else read_data
  data = dataset.load(data_config, read_data)
  held_out.check({'train.distill_from': (workdir,)},
                 read_data.splits['train'], data, dataset.identity(data),
                 dataset.face_digests(data.splits['train'].images))


def test_an_older_run_of_the_same_held_out_splits_is_not_read_again(
    synthetic_fer, tmp_path):
  config = _config(synthetic_fer.write_csv())
  source = _source_run(tmp_path / 'source', config, faces_recorded=False)
  read_data = dataset.read(config.data)
  (tmp_path / 'fer2013.csv').unlink()  # Its data is not needed.
  _check(source, config.data, read_data)


@pytest.mark.parametrize('faces_recorded', [True, False])
def test_a_run_that_trained_on_test_faces_is_refused(synthetic_fer, tmp_path,
                                                     faces_recorded):
  this_run = _config(synthetic_fer.write_csv())
  moved, _ = _two_test_faces_in_training(synthetic_fer.records)
  other_file = SyntheticFer(tmp_path, moved).write_csv('other.csv')
  source = _source_run(tmp_path / 'source', _config(other_file),
                       faces_recorded)
  with pytest.raises(UserError, match=r'config\.train\.distill_from: .*source '
                     r'trained on 0 val and 2 test faces of this run'):
    _check(source, this_run.data)


def test_faces_learned_two_runs_up_a_chain_are_refused(synthetic_fer,
                                                       tmp_path):
  """A trained on two of this run's test faces; B learned from A but its
  data lacks those faces, so B's own training faces hold none of them; B
  passes A's on in its train_faces.npy, as loop writes it."""
  records = synthetic_fer.records
  this_run = _config(synthetic_fer.write_csv())
  moved, moved_rows = _two_test_faces_in_training(records)
  a_data = _config(SyntheticFer(tmp_path, moved).write_csv('a.csv'))
  a = _source_run(tmp_path / 'a', a_data)
  b_data = _config(SyntheticFer(tmp_path, [
      r for i, r in enumerate(records) if i not in moved_rows]
  ).write_csv('b.csv'))
  b = _source_run(tmp_path / 'b', b_data)
  b_run = rundir.RunDir(b, create=False)
  own = np.load(b_run.file(rundir.TRAIN_FACES))
  _check(b, this_run.data)  # B's own training faces alone pass.
  read_data = dataset.read(b_data.data)
  data = dataset.load(b_data.data, read_data)
  passed_on = held_out.check(
      {'model.init_from': (a,)}, read_data.splits['train'], data,
      dataset.identity(data), own)
  np.testing.assert_array_equal(
      passed_on, np.unique(np.load(rundir.RunDir(a, create=False).file(
          rundir.TRAIN_FACES))))
  b_run.write_array(rundir.TRAIN_FACES, np.union1d(own, passed_on))
  with pytest.raises(UserError, match=r'b trained on 0 val and 2 test faces '
                     r'of this run \(itself or through a run it learned '
                     r'from\)'):
    _check(b, this_run.data)


def test_a_run_records_the_faces_its_sources_passed_on(csv_path, tmp_path,
                                                       monkeypatch):
  passed_on = np.array([1, 2, 3], np.uint64)
  monkeypatch.setattr(held_out, 'check', lambda *_: passed_on)
  run, data = loop.train(tiny_config(csv_path, epochs=1), str(tmp_path))
  own = dataset.face_digests(data.splits['train'].images)
  np.testing.assert_array_equal(np.load(run.file(rundir.TRAIN_FACES)),
                                np.union1d(own, passed_on))
  # Resumed, it keeps them: its init_from is not read again.
  monkeypatch.setattr(held_out, 'check', lambda *_: passed_on[:0])
  run, _ = loop.train(tiny_config(csv_path, epochs=2), str(tmp_path))
  np.testing.assert_array_equal(np.load(run.file(rundir.TRAIN_FACES)),
                                np.union1d(own, passed_on))


def test_a_drawn_split_of_another_split_seed_is_refused(make_synthetic_fer,
                                                        tmp_path):
  # 10 faces a class: 7, 1 and 2 of each in the drawn splits.
  folder = make_synthetic_fer((6, 2, 2)).write_folder(prefixes=False)
  source = _source_run(tmp_path / 'source', _config(folder, split_seed=1))
  with pytest.raises(UserError, match=r'trained on \d+ val and \d+ test'):
    _check(source, _config(folder).data)


@pytest.mark.parametrize('faces_recorded', [True, False])
@pytest.mark.parametrize('classes', ['all', 'without the repeat'])
def test_the_datas_own_repeats_are_not_a_leak(synthetic_fer, tmp_path,
                                              faces_recorded, classes):
  """FER2013 repeats some faces across its splits: a source that trained on
  such a face did no more than any run on the data's training split, this
  one too, whether or not its class options keep that face."""
  records = list(synthetic_fer.records)
  train_row = next(i for i, r in enumerate(records) if r.usage == 'Training')
  test_row = next(i for i, r in enumerate(records)
                  if r.usage == 'PrivateTest'
                  and r.label != records[train_row].label)
  records[test_row] = dataclasses.replace(records[test_row],
                                          image=records[train_row].image)
  this_run = SyntheticFer(tmp_path, records).write_csv()
  # Another val split (one val face dropped), the same training faces.
  val_row = next(i for i, r in enumerate(records) if r.usage == 'PublicTest')
  other_file = SyntheticFer(tmp_path, records[:val_row] + records[val_row + 1:]
                            ).write_csv('other.csv')
  source = _source_run(tmp_path / 'source', _config(other_file),
                       faces_recorded)
  config = _config(this_run)
  if classes != 'all':  # This run does not train on the repeated face.
    config.data.classes = ','.join(
        name for i, name in enumerate(sources.FER2013_CLASSES)
        if i != records[train_row].label)
    assert not np.isin(
        dataset.face_digests(records[train_row].image[None]),
        dataset.face_digests(dataset.load(config.data).splits['train'].images)
    ).any()
  _check(source, config.data)


def test_an_older_run_whose_data_is_gone_or_changed_is_refused(synthetic_fer,
                                                              tmp_path):
  this_run = _config(synthetic_fer.write_csv())
  records = synthetic_fer.records
  val_row = next(i for i, r in enumerate(records) if r.usage == 'PublicTest')
  other = SyntheticFer(tmp_path, records[:val_row] + records[val_row + 1:])
  source = _source_run(tmp_path / 'source', _config(other.write_csv('o.csv')),
                       faces_recorded=False)
  other.write_csv('o.csv', other.csv_lines()[:-1])
  with pytest.raises(UserError, match=r'o\.csv \(config\.json\), is no '
                     'longer what it trained on'):
    _check(source, this_run.data)
  (tmp_path / 'o.csv').unlink()
  with pytest.raises(UserError, match=r'cannot tell whether .*source trained '
                     r'on this run\'s val or test faces: it has no '
                     r'train_faces\.npy, .*o\.csv \(config\.json\), is not '
                     'there'):
    _check(source, this_run.data)


def test_training_refuses_such_a_teacher_or_init_from(make_synthetic_fer,
                                                      tmp_path, monkeypatch):
  folder = make_synthetic_fer((6, 2, 2)).write_folder(prefixes=False)
  source_config = tiny_config(folder)  # init_from wants the same model.
  source_config.data.split_seed = 1
  source = _source_run(tmp_path / 'source', source_config)
  # init_from's own check wants a trained run; the refusal comes before
  # its weights are read.
  monkeypatch.setattr(rundir.RunDir, 'has_checkpoint', lambda *_: True)
  # The check compares with the whole training split: it is not read again
  # (the real CSV takes seconds to read).
  reads = []
  read = dataset.read
  monkeypatch.setattr(dataset, 'read', lambda config: reads.append(
      config.path) or read(config))
  for key, value in (('train.distill_from', source),
                     ('model.init_from', source)):
    config = tiny_config(folder, epochs=1)
    config.update_from_flattened_dict({key: value})
    reads.clear()
    with pytest.raises(UserError, match=rf'config\.{key}: .*source trained '
                       'on'):
      loop.train(config, str(tmp_path / key))
    assert reads == [folder]
