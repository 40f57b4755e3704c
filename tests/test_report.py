"""python -m fer_jax.report on a tiny run: its tables equal what training
logged for the best checkpoint, beside ten-crop, and every figure is drawn."""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fakedata
from fer_jax import release, rundir
from fer_jax.data import dataset
from fer_jax.errors import UserError
from fer_jax.evaluate import ensemble, regenerate, tables
from fer_jax.predict import predictor
from fer_jax.train import loop
from test_device_session import experiment_script
from test_inference import damage
from test_loop import tiny_config
from test_plots import assert_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ('training_curves.png', 'per_class_curves.png',
           'confusion_val.png', 'confusion_test.png', 'roc_test.png',
           'tsne_pixels.png', 'tsne_embeddings.png', 'test_predictions.png',
           'class_distribution.png')


def _report(*args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', 'fer_jax.report', *args],
                        capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope='module')
def reported(tmp_path_factory):
  """A 2-epoch run (not yet perfect, so the numbers say something) on a
  data path relative to where it trained, and its report with ten-crop;
  returns (run, out folder)."""
  root = tmp_path_factory.mktemp('report')
  fakedata.write_challenge_csv(str(root / 'fer2013.csv'), per_class=(12, 4, 4))
  cwd = os.getcwd()
  os.chdir(root)
  try:
    run, _ = loop.train(tiny_config('fer2013.csv', epochs=2,
                                    learning_rate=1e-3), 'tiny')
  finally:
    os.chdir(cwd)
  run.close()
  out = root / 'out'
  result = _report(f'--workdirs={run.path}', f'--out={out}', '--ten_crop',
                   '--tsne_points=20', f'--data_path={root / "fer2013.csv"}')
  assert result.returncode == 0, result.stderr
  return run, out


def _csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_tables_equal_the_metrics_logged_for_the_best_epoch(reported):
  run, out = reported
  report = run.read_json(rundir.REPORT)
  logged = run.read_metrics()[report['best_epoch'] - 1]
  assert logged['val/accuracy'] < 1  # Else equality would be trivial.

  summary, = _csv(out / 'summary.csv')
  assert summary['val acc'] == tables.percent(logged['val/accuracy'])
  assert summary['val macro-F1'] == tables.percent(logged['val/macro_f1'])
  assert summary['params'] == f'{report["num_params"]:,}'
  assert float(summary['MFLOPs']) > 0
  averages = {row['split']: row for row in _csv(out / 'summary_averages.csv')}
  for column, key in (('macro-P', 'macro_precision'),
                      ('macro-R', 'macro_recall'),
                      ('weighted-F1', 'weighted_f1')):
    assert averages['val'][column] == tables.percent(logged[f'val/{key}'])
  assert averages['val']['loss'] == f'{logged["val/loss"]:.4f}'
  for row in _csv(out / 'summary_per_class.csv'):
    for column, score in (('val P', 'precision'), ('val R (acc)', 'recall'),
                          ('val F1', 'f1')):
      assert row[column] == tables.percent(
          logged[f'val/{score}/{row["class"]}'])
  # report.json was rewritten from the checkpoint, with the test split.
  assert report['val']['accuracy'] == pytest.approx(logged['val/accuracy'])
  assert sum(map(sum, report['test']['confusion_matrix'])) == 28


def test_ten_crop_is_reported_beside_single_crop(reported):
  run, out = reported
  report = run.read_json(rundir.REPORT)
  summary, = _csv(out / 'summary.csv')
  for split in ('val', 'test'):
    assert summary[f'{split} 10-crop acc'] == tables.percent(
        report['ten_crop'][split]['accuracy'])
    assert summary[f'{split} acc'] == tables.percent(
        report[split]['accuracy'])
  splits = [row['split'] for row in _csv(out / 'summary_averages.csv')]
  assert splits == ['val', 'test', 'val 10-crop', 'test 10-crop']
  with open(out / 'summary.md') as f:
    assert '| test 10-crop |' in f.read()


def test_every_figure_is_written(reported):
  run, out = reported
  assert sorted(os.listdir(out / 'tiny')) == sorted(FIGURES)
  for name in FIGURES:
    assert_png(str(out / 'tiny' / name))
  assert_png(run.file('confusion_matrix.png'))


def test_a_data_path_not_found_from_here_asks_for_data_path(reported,
                                                           tmp_path):
  run, _ = reported
  result = _report(f'--workdirs={run.path}', f'--out={tmp_path}')
  assert result.returncode == 2
  last_line = result.stderr.splitlines()[-1]
  assert last_line.startswith('error: ') and '--data_path' in last_line
  assert "config.data.path='fer2013.csv'" in last_line
  assert 'Traceback' not in result.stderr


def test_ferplus_votes_not_found_from_here_ask_for_ferplus_path(reported,
                                                               tmp_path):
  run, _ = reported
  moved = rundir.RunDir(shutil.copytree(run.path, tmp_path / 'moved'),
                        create=False)
  config = moved.read_json(rundir.CONFIG)
  config['data']['ferplus_path'] = 'elsewhere/fer2013new.csv'
  with open(moved.file(rundir.CONFIG), 'w') as f:
    json.dump(config, f)
  data_path = os.path.join(os.path.dirname(run.path), 'fer2013.csv')
  with pytest.raises(UserError, match=r"ferplus_path='elsewhere/fer2013new"
                                      r".csv'.*--ferplus_path"):
    regenerate.regenerate([moved.path], str(tmp_path / 'out'),
                          data_path=data_path)


def test_a_report_on_other_data_than_the_run_had_is_refused(reported,
                                                             tmp_path):
  """dataset.json records each split's sha256: other faces at --data_path,
  or FER+'s 8 classes for a FER2013 run, would score the model on what it
  was not selected and evaluated on."""
  run = reported[0]
  other = str(tmp_path / 'other.csv')
  fakedata.write_challenge_csv(other, per_class=(12, 4, 4), seed=1)
  same = str(tmp_path / 'fer2013.csv')  # The file it trained on, elsewhere.
  votes = str(tmp_path / 'fer2013new.csv')
  fakedata.write_ferplus_votes(
      votes, fakedata.write_challenge_csv(same, per_class=(12, 4, 4)))
  out = str(tmp_path / 'out')
  for data_path, ferplus_path in ((other, ''), (same, votes)):
    with pytest.raises(UserError, match=(
        'The data given has other val/test images than '
        f'{re.escape(run.path)} was selected and evaluated on')):
      regenerate.regenerate([run.path], out, data_path=data_path,
                            ferplus_path=ferplus_path, with_figures=False)
  # The same faces from another path are the data it had.
  config = run.load_config()
  config.data.path = same
  same_data = dataset.identity(dataset.load(config.data))
  assert not dataset.changed_splits(run.read_json(rundir.DATASET), same_data)


def test_not_a_run_directory_is_one_clean_error(reported, tmp_path):
  run, _ = reported
  # More workdirs may follow as plain arguments (a shell glob); all are
  # checked before anything is evaluated.
  result = _report('--workdirs', run.path, str(tmp_path),
                   f'--out={tmp_path / "out"}')
  assert result.returncode == 2
  assert result.stderr.splitlines()[-1] == (
      f'error: {tmp_path} is not a run directory (no config.json) nor a '
      'sweep directory of them; give the --workdir of a training run or of '
      'a sweep.')
  assert not os.path.exists(tmp_path / 'out')


def test_a_damaged_checkpoint_ends_the_report_before_the_data_is_read(
    reported, tmp_path, monkeypatch):
  """Reading FER2013 takes 6 s: a checkpoint that cannot be evaluated is
  found first."""
  run, _ = reported
  damaged = rundir.RunDir(shutil.copytree(run.path, tmp_path / 'damaged'),
                          create=False)
  damage(damaged, 'best', damaged.latest_step('best'))

  def load(data_config):
    raise AssertionError(f'{data_config.path} read before the checkpoint')

  monkeypatch.setattr(dataset, 'load', load)
  with pytest.raises(UserError, match='No readable best checkpoint in '
                     f'{re.escape(damaged.path)}'):
    regenerate.regenerate([damaged.path], str(tmp_path / 'out'),
                          data_path=str(tmp_path / 'fer2013.csv'))


def test_a_released_copy_reproduces_and_keeps_its_report(reported, tmp_path,
                                                         monkeypatch, caplog):
  run, _ = reported
  released_dir = str(tmp_path / 'pretrained')
  info = release.release(run.path, released_dir, command='python -m ...',
                         commit='abc123', device='cpu', wall_time='1 s')
  released = rundir.RunDir(released_dir, create=False)
  assert released.is_released
  # The best checkpoint only, no optimizer state, TensorBoard or latest.
  assert sorted(os.listdir(released_dir)) == sorted(
      [rundir.CONFIG, rundir.DATASET, rundir.METRICS, rundir.REPORT,
       rundir.RELEASE, rundir.TRAIN_FACES, 'checkpoints'])
  assert os.listdir(os.path.join(released_dir, 'checkpoints')) == ['best']
  assert info == released.read_json(rundir.RELEASE)
  assert info['commit'] == 'abc123' and info['source_workdir'] == run.path
  assert info['checkpoint_sha256'] == run.checkpoint_sha256('best')
  shipped = run.read_json(rundir.REPORT)
  assert info['test']['accuracy'] == shipped['test']['accuracy']
  assert set(info['test']['f1']) == set(shipped['class_names'])

  kept = open(released.file(rundir.REPORT), 'rb').read()
  caplog.set_level(logging.INFO)
  # The run trained on 'fer2013.csv' relative to its parent folder. With a
  # second copy: an ensemble of two identical models.
  data_path = os.path.join(os.path.dirname(run.path), 'fer2013.csv')
  copy_dir = str(tmp_path / 'copy')
  release.release(run.path, copy_dir)
  out = tmp_path / 'out'
  summary = regenerate.regenerate([released_dir, copy_dir], str(out),
                                  data_path=data_path, with_figures=False,
                                  with_ensemble=True)
  assert open(released.file(rundir.REPORT), 'rb').read() == kept
  assert summary == str(out / 'summary.md')
  assert not set(FIGURES) & set(os.listdir(out / 'copy'))
  name = 'pretrained'
  fresh = json.load(open(out / name / rundir.REPORT))
  assert fresh['test'] == shipped['test']
  assert f'{name} test accuracy' in caplog.text
  assert 'not reproduced' not in caplog.text
  ensembled = json.load(open(out / 'ensemble.json'))
  assert ensembled['num_params'] == 2 * shipped['num_params']
  for split in ('val', 'test'):
    assert ensembled[split]['accuracy'] == shipped[split]['accuracy']
    assert ensembled[split]['confusion_matrix'] == (
        shipped[split]['confusion_matrix'])
  assert 'Ensemble of 2 runs' in open(out / 'ensemble.md').read()

  # The predictor's default model is the shipped run directory.
  monkeypatch.setattr(predictor, 'PRETRAINED_DIR', released_dir)
  faces = predictor.Predictor.from_workdir(detect_faces=False).classify(
      fakedata.class_images(np.arange(3)))
  np.testing.assert_allclose(faces.sum(1), 1, rtol=1e-5)


def test_release_and_results_entry_refuse_a_report_of_another_checkpoint(
    reported, tmp_path):
  """A run that trained on after its report (resumed for more epochs) may
  have a newer best checkpoint: its figures would be shipped or cited with
  the other weights. Reports that predate checkpoint_step name their best
  epoch instead."""
  run, _ = reported
  copy = rundir.RunDir(str(shutil.copytree(run.path, tmp_path / 'run')),
                       create=False)
  copy.append_json_line(rundir.CONFIG_HISTORY, {'step': 1, 'config': {}})
  report = copy.read_json(rundir.REPORT)
  steps = {r['epoch']: r['step'] for r in copy.read_metrics()}
  assert steps[report['best_epoch']] == report['checkpoint_step']
  results_entry = results_entry_module()
  provenance = dict.fromkeys(results_entry.PROVENANCE, '')
  other_epoch = 3 - report['best_epoch']  # Of the two.
  legacy = {k: v for k, v in report.items() if k != 'checkpoint_step'}
  for stale in (dict(report, checkpoint_step=steps[other_epoch]),
                dict(legacy, best_epoch=other_epoch)):
    copy.write_json(rundir.REPORT, stale)
    for refused in (
        lambda: release.release(copy.path, str(tmp_path / 'out')),
        lambda: results_entry.entry(copy, provenance)):
      with pytest.raises(UserError, match=(
          f'is of the checkpoint of step {steps[other_epoch]}, but the best '
          f'checkpoint of .* is of step {report["checkpoint_step"]}: it '
          'trained on after its report. Run `python -m fer_jax.report')):
        refused()
  assert not os.path.exists(tmp_path / 'out')
  copy.write_json(rundir.REPORT, legacy)
  release.release(copy.path, str(tmp_path / 'out'))
  # A resumed run's earlier configs travel with it.
  assert os.path.isfile(tmp_path / 'out' / rundir.CONFIG_HISTORY)


def test_release_refuses_an_out_it_must_not_replace(reported, tmp_path):
  run, _ = reported
  user_folder = tmp_path / 'photos'
  user_folder.mkdir()
  (user_folder / 'keep.jpg').write_bytes(b'mine')
  a_file = tmp_path / 'notes.txt'
  a_file.write_text('mine')
  for out, message in ((run.path, 'or a folder above it'),
                       (os.path.dirname(run.path), 'or a folder above it'),
                       (str(a_file), 'is a file'),
                       (str(user_folder), 'is no earlier release')):
    with pytest.raises(UserError, match=message):
      release.release(run.path, out)
  assert (user_folder / 'keep.jpg').read_bytes() == b'mine'
  assert a_file.read_text() == 'mine'
  # `--out=.` from inside the run's parent: one line, the run untouched.
  # This checkout's fer_jax, whatever the working directory.
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
      [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p])}
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.release', f'--workdir={run.path}',
       '--out=.'], capture_output=True, text=True,
      cwd=os.path.dirname(run.path), env=env, timeout=120)
  assert result.returncode == 2
  assert result.stderr.splitlines()[-1].startswith(
      f'error: --out=. is --workdir={run.path} or a folder above it')
  assert 'Traceback' not in result.stderr
  assert rundir.is_run_directory(run.path)
  # An empty folder, then that earlier release, are replaced.
  (tmp_path / 'empty').mkdir()
  for _ in range(2):
    release.release(run.path, str(tmp_path / 'empty'))
  assert rundir.RunDir(str(tmp_path / 'empty'), create=False).is_released


def test_tsne_points_are_at_least_2_or_0_for_none(reported, tmp_path):
  run, _ = reported
  for points in (1, -1):
    with pytest.raises(UserError, match=f'--tsne_points={points} must be at '
                       'least 2, or 0'):
      regenerate.regenerate([run.path], str(tmp_path / 'out'),
                            tsne_points=points)
  copy = shutil.copytree(run.path, tmp_path / 'tiny')
  regenerate.regenerate([str(copy)], str(tmp_path / 'out'), tsne_points=0,
                        data_path=_data_path(run))
  assert sorted(os.listdir(tmp_path / 'out' / 'tiny')) == sorted(
      name for name in FIGURES if not name.startswith('tsne_'))


def test_a_report_without_ten_crop_keeps_that_of_the_same_checkpoint(
    reported, tmp_path, caplog):
  run, _ = reported
  copy = rundir.RunDir(shutil.copytree(run.path, tmp_path / 'tiny'),
                       create=False)
  ten_crop = copy.read_json(rundir.REPORT)['ten_crop']
  assert copy.read_json(rundir.REPORT)['checkpoint_step'] == (
      run.latest_step('best'))
  regenerate.regenerate([copy.path], str(tmp_path / 'out'),
                        data_path=_data_path(run), with_figures=False)
  assert copy.read_json(rundir.REPORT)['ten_crop'] == ten_crop
  # Ten-crop figures of another checkpoint (or unrecorded) are not kept.
  earlier = copy.read_json(rundir.REPORT)
  del earlier['checkpoint_step']
  copy.write_json(rundir.REPORT, earlier)
  regenerate.regenerate([copy.path], str(tmp_path / 'out'),
                        data_path=_data_path(run), with_figures=False)
  assert 'ten_crop' not in copy.read_json(rundir.REPORT)
  assert 'Dropping the ten-crop figures' in caplog.text


def _data_path(run):
  """The run trained on 'fer2013.csv' relative to its parent folder."""
  return os.path.join(os.path.dirname(run.path), 'fer2013.csv')


def test_the_shipped_digest_matches_its_release_record_quietly(caplog):
  # A Checkpointer pointed at the model item warned on every digest (its
  # step metadata file sits one folder up); warm starts and releases take it.
  shipped = rundir.RunDir(predictor.PRETRAINED_DIR, create=False)
  caplog.set_level(logging.WARNING)
  assert shipped.checkpoint_sha256('best') == (
      shipped.read_json(rundir.RELEASE)['checkpoint_sha256'])
  assert not caplog.records, caplog.text


def _member(name, logits, labels=(0, 1, 2, 2), classes=('a', 'b', 'c')):
  logits = np.log(np.asarray(logits, np.float64))
  report = {'num_params': 10, 'mflops': 1.5}
  return ensemble.Member(name, classes, {s: np.array(labels)
                                          for s in ('val', 'test')},
                         report, {'val': logits, 'test': logits}, None)


def test_an_ensemble_averages_the_members_probabilities():
  # Member a is right on faces 0, 1; member b on 2, 3; their mean on 0, 2, 3
  # (on face 1 a's 0.5 for 'b' loses to the mean's 0.55 for 'a').
  a_probabilities = [[.8, .1, .1], [.4, .5, .1], [.4, .3, .3], [.5, .1, .4]]
  a = _member('a', a_probabilities)
  b = _member('b', [[.4, .3, .3], [.7, .2, .1], [.1, .1, .8], [.1, .1, .8]])
  result = ensemble.evaluate([a, b])
  assert result['members'] == ['a', 'b']
  assert result['num_params'] == 20 and result['mflops'] == 3.0
  assert result['test']['accuracy'] == 0.75
  assert result['val']['confusion_matrix'] == [[1, 0, 0], [1, 0, 0],
                                               [0, 0, 2]]
  assert 'ten_crop' not in result
  with pytest.raises(UserError, match='at least two runs'):
    ensemble.evaluate([a])
  with pytest.raises(UserError, match='Run c does not predict the same'):
    ensemble.evaluate([a, _member('c', a_probabilities, labels=(0, 0, 0, 0))])


def results_entry_module():
  return experiment_script('results_entry')


def test_results_entry_has_every_figure_issue_6_asks_for(reported):
  run, _ = reported
  text = results_entry_module().entry(run, {'command': 'python -m fer_jax.main x',
                                   'commit': 'abc123', 'device': 'cpu',
                                   'wall_time': '9 s'})
  report = run.read_json(rundir.REPORT)
  for expected in ('python -m fer_jax.main x', 'Commit abc123', 'cpu', '9 s',
                   'seed 0', run.checkpoint_sha256('best'),
                   f'{100 * report["test"]["accuracy"]:.2f}',
                   f'{100 * report["val"]["macro_f1"]:.2f}',
                   '| single crop |', '| ten crops |',
                   '| PrivateTest | ', *report['class_names']):
    assert expected in text


def test_results_entry_names_a_checkpoint_left_on_the_device(reported,
                                                             tmp_path):
  run, _ = reported
  sent_back = shutil.copytree(run.path, tmp_path / 'run')
  left_out = experiment_script('device_results').leave_out(str(sent_back))
  shutil.rmtree(sent_back / 'checkpoints')
  results_entry = results_entry_module()
  text = results_entry.entry(rundir.RunDir(str(sent_back), create=False),
                             dict.fromkeys(results_entry.PROVENANCE, ''))
  assert left_out['sha256'] == run.checkpoint_sha256('best')
  assert (f'`{left_out["sha256"]}` (step {left_out["step"]}; the checkpoint '
          'stayed on the device') in text


def test_results_entry_of_an_unfinished_run_says_what_to_run(reported,
                                                            tmp_path):
  run, _ = reported
  results_entry = results_entry_module()
  provenance = dict.fromkeys(results_entry.PROVENANCE, '')
  unreported = shutil.copytree(run.path, tmp_path / 'unreported')
  os.remove(unreported / rundir.REPORT)
  with pytest.raises(UserError, match='has no report.json: run `python -m '
                     'fer_jax.report --workdirs'):
    results_entry.entry(rundir.RunDir(str(unreported), create=False),
                        provenance)
  untrained = shutil.copytree(run.path, tmp_path / 'untrained')
  shutil.rmtree(untrained / 'checkpoints')
  with pytest.raises(UserError, match='has no best checkpoint'):
    results_entry.entry(rundir.RunDir(str(untrained), create=False),
                        provenance)
  # The script: one error line, as every command here.
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'results_entry.py'),
       f'--workdir={tmp_path / "nowhere"}'],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.splitlines()[-1].startswith(
      f'error: {tmp_path / "nowhere"} is not a run directory')
  assert 'Traceback' not in result.stderr
