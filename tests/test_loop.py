"""End to end on a tiny synthetic FER2013: train, checkpoints, resume, report."""

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import jax
from jax._src import compiler
import numpy as np
import pytest

import fakedata
from fer_jax import inference, rundir
from fer_jax.config import default_config
from fer_jax.data import dataset
from fer_jax.errors import UserError
from fer_jax.evaluate import report
from fer_jax.train import config_check, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_path, **train):
  config = default_config()
  config.data.path = data_path
  config.model.stem_features = 8
  config.model.block_features = (8, 16)
  config.train.batch_size = 16
  config.train.epochs = 3
  config.train.learning_rate = 3e-3
  config.train.eval_batch_size = 32
  config.train.update(train)
  return config


def test_train_writes_the_run_directory_and_report(csv_path, tmp_path,
                                                   capsys):
  run, data = loop.train(tiny_config(csv_path), str(tmp_path))
  # Parameters and XLA's FLOPs of one forward pass, printed at the start.
  assert re.search(r'resnet_small: [\d,]+ parameters, [\d,.]+ MFLOPs per '
                   'image', capsys.readouterr().out)
  result = report.write_report(run, data)

  records = run.read_metrics()
  assert [r['epoch'] for r in records] == [1, 2, 3]
  assert records[-1]['step'] == 3 * (84 // 16)
  assert records[-1]['train/loss'] < records[0]['train/loss']
  for key in ('val/loss', 'val/accuracy', 'val/macro_f1', 'val/f1/happy',
              'learning_rate', 'train_images_per_second'):
    assert key in records[0]
  (events,) = os.listdir(run.file(rundir.TENSORBOARD))
  with open(os.path.join(run.file(rundir.TENSORBOARD), events), 'rb') as f:
    logged = f.read()
  assert b'val/accuracy' in logged and b'train/loss' in logged
  assert run.latest_step('latest') == 3 * (84 // 16)
  assert json.load(open(run.file('config.json')))['train']['epochs'] == 3
  # Which faces it trained on, one distinct digest each (fakedata's faces
  # are distinct), sorted.
  trained_on = np.load(run.file(rundir.TRAIN_FACES))
  np.testing.assert_array_equal(
      trained_on, np.sort(dataset.face_digests(data.splits['train'].images)))
  assert len(set(trained_on.tolist())) == 84

  assert result['num_params'] > 0
  for split in ('val', 'test'):
    for key in ('accuracy', 'macro_f1', 'weighted_f1', 'per_class',
                'confusion_matrix'):
      assert key in result[split]
    assert sum(map(sum, result[split]['confusion_matrix'])) == 28
  assert set(result['test']['per_class']['happy']) == {
      'precision', 'recall', 'f1', 'support'}
  assert json.load(open(run.file('report.json'))) == json.loads(
      json.dumps(result))
  assert os.path.getsize(run.file(report.CONFUSION_PNG)) > 1000
  # The report re-evaluates the best checkpoint: it matches what was logged.
  best = records[result['best_epoch'] - 1]
  assert np.isclose(result['val']['macro_f1'], best['val/macro_f1'])
  assert np.isclose(result['val']['loss'], best['val/loss'], atol=1e-5)


def _equal(a, b) -> bool:
  return jax.tree.all(jax.tree.map(np.array_equal, a, b))


def test_resumed_run_matches_an_uninterrupted_one(csv_path, tmp_path):
  """At an epoch's end, with an EMA of the weights; tests/test_resume.py
  resumes runs without one, killed mid-epoch."""
  config = lambda **train: tiny_config(csv_path, ema_decay=0.9, **train)
  straight, _ = loop.train(config(), str(tmp_path / 'straight'))
  first, data = loop.train(config(epochs=1), str(tmp_path / 'resumed'))
  # Epoch 1 is the best and the latest: best holds the latest's EMA, not its
  # trained weights, and is what was validated.
  template = _variables(first)
  latest = first.restore('latest', model=template, ema=template)
  best = first.restore('best', model=template)['model']
  assert _equal(best, latest['ema'])
  assert not _equal(best, latest['model'])
  trained = inference.load_trained(first)
  val = data.splits['val']
  logged = inference.evaluate(
      inference.make_logits_fn(trained.model, trained.input_spec),
      trained.variables, val.images, val.labels, data.class_names, 32)
  assert np.isclose(logged['loss'], first.read_metrics()[0]['val/loss'],
                    atol=1e-5)
  other_start = config()
  other_start.model.init_from = str(tmp_path / 'straight')
  with pytest.raises(UserError, match='another config.model.init_from'):
    loop.train(other_start, str(tmp_path / 'resumed'))
  resumed, _ = loop.train(config(), str(tmp_path / 'resumed'))

  # Resumed under 3 epochs instead of 1: the config of its first epoch is
  # kept, with the step it reached.
  with open(resumed.file(rundir.CONFIG_HISTORY)) as f:
    (history,) = [json.loads(line) for line in f]
  assert history['step'] == 84 // 16
  assert history['config']['train']['epochs'] == 1
  assert resumed.load_config().train.epochs == 3
  assert [r['epoch'] for r in resumed.read_metrics()] == [1, 2, 3]
  for a, b in zip(straight.read_metrics(), resumed.read_metrics()):
    assert a['train/loss'] == b['train/loss']
    assert a['val/accuracy'] == b['val/accuracy']
    assert a['val/loss'] == b['val/loss']
  template = _variables(straight)
  a = straight.restore('latest', model=template, ema=template)
  b = resumed.restore('latest', model=template, ema=template)
  assert _equal(a['model'], b['model'])
  assert _equal(a['ema'], b['ema'])


def _variables(run):
  return inference.load_trained(run).variables


def test_resuming_on_other_data_is_refused(csv_path, tmp_path):
  loop.train(tiny_config(csv_path, epochs=1), str(tmp_path))
  other = str(tmp_path / 'other.csv')
  fakedata.write_challenge_csv(other, per_class=(12, 4, 4), seed=1)
  with pytest.raises(UserError, match=(
      'is resumed on other train/val/test images than it trained on')):
    loop.train(tiny_config(other, epochs=2), str(tmp_path))
  assert not os.path.exists(tmp_path / rundir.CONFIG_HISTORY)


def test_early_stopping_keeps_the_best_checkpoint(csv_path, tmp_path):
  # log_every_steps=1: the progress bar's loss, one update late, every step.
  config = tiny_config(csv_path, epochs=6, early_stopping_patience=1,
                       learning_rate=1e-9, schedule='constant',
                       log_every_steps=1)
  run, _ = loop.train(config, str(tmp_path))
  records = run.read_metrics()
  assert len(records) < 6
  assert run.latest_step('best') == 84 // 16  # Epoch 1: nothing is learnt.


@pytest.mark.parametrize('metric', ['val/loss', 'val/accuracy'])
def test_plateau_halves_the_learning_rate(metric, csv_path, tmp_path):
  config = tiny_config(csv_path, epochs=4, plateau_patience=1,
                       plateau_metric=metric, learning_rate=1e-9,
                       early_stopping_patience=0)
  run, _ = loop.train(config, str(tmp_path))
  rates = [r['learning_rate'] for r in run.read_metrics()]
  # Logged before each epoch's plateau check; nothing improves after epoch 1.
  np.testing.assert_allclose(rates, [1e-9, 1e-9, 5e-10, 2.5e-10], rtol=1e-6)


def test_resumed_run_takes_a_changed_learning_rate_and_plateau(csv_path,
                                                               tmp_path):
  """A constant learning rate is optimizer state and the plateau's
  settings are saved with its counts: a run resumed under a changed config
  trains as its config.json says, its plateau's reductions so far kept."""
  settings = dict(plateau_patience=1, plateau_metric='val/accuracy',
                  learning_rate=1e-9, early_stopping_patience=0)
  loop.train(tiny_config(csv_path, epochs=2, **settings), str(tmp_path))
  run, _ = loop.train(tiny_config(csv_path, **dict(
      settings, epochs=4, learning_rate=4e-9, plateau_patience=50)),
                      str(tmp_path))
  rates = [r['learning_rate'] for r in run.read_metrics()]
  # Halved once after epoch 2 (nothing improves), then not within 50.
  np.testing.assert_allclose(rates, [1e-9, 1e-9, 2e-9, 2e-9], rtol=1e-6)


def test_plateau_after_a_warm_up(csv_path, tmp_path):
  config = tiny_config(csv_path, epochs=4, plateau_patience=1,
                       plateau_metric='val/accuracy', learning_rate=1e-9,
                       warmup_epochs=1, early_stopping_patience=0)
  run, _ = loop.train(config, str(tmp_path))
  rates = [r['learning_rate'] for r in run.read_metrics()]
  # The last of 5 warm-up steps runs at 4/5 of the rate.
  np.testing.assert_allclose(rates, [8e-10, 1e-9, 5e-10, 2.5e-10], rtol=1e-6)


def test_epoch_time_leaves_out_compiling_the_train_step(csv_path, tmp_path,
                                                        monkeypatch):
  """The step compiles once, before the epoch's timer starts: compiling it
  made 4 s slower leaves the epoch's train_seconds short of 4 s."""
  # Where a jitted call and an ahead-of-time compile both compile.
  compile_or_get_cached = compiler.compile_or_get_cached
  compiled = []

  def slow_compile(backend, module, *args, **kwargs):
    if 'train_step' in str(module.operation.attributes['sym_name']):
      compiled.append(time.sleep(4))
    return compile_or_get_cached(backend, module, *args, **kwargs)

  monkeypatch.setattr(compiler, 'compile_or_get_cached', slow_compile)
  run, _ = loop.train(tiny_config(csv_path, epochs=1), str(tmp_path))
  assert len(compiled) == 1  # The step's first call ran what was compiled.
  (record,) = run.read_metrics()
  assert record['train_seconds'] < 4


@pytest.mark.parametrize('field', ['selection_metric', 'plateau_metric'])
def test_metrics_of_the_test_split_are_refused(field, csv_path):
  config = tiny_config(csv_path, **{field: 'test/accuracy'})
  with pytest.raises(UserError, match=f"config.train.{field}='test/accuracy' "
                                      'must be a validation metric'):
    config_check.check(config)


def test_unlogged_plateau_metric_names_the_logged_ones(csv_path, tmp_path):
  config = tiny_config(csv_path, epochs=1, plateau_metric='val/f1/joy')
  config_check.check(config)  # Any class passes before the data is read.
  with pytest.raises(UserError, match="config.train.plateau_metric='val/f1/"
                                      "joy' is not logged; choose one of "
                                      r"\[.*'val/accuracy'.*'val/f1/happy'"):
    loop.train(config, str(tmp_path))
  # Once the data is read: before anything is trained or saved.
  assert not os.path.exists(os.path.join(tmp_path, rundir.CONFIG))


def test_tensorboard_writer_leaves_torch_unimported(tmp_path):
  """tensorboardX imports torch, if installed, for type annotations only:
  600 MB and seconds of every training process that
  epoch_metrics.summary_writer saves; torch still imports afterwards."""
  script = textwrap.dedent(f'''
      import importlib.util
      import sys
      from fer_jax.train import epoch_metrics
      writer = epoch_metrics.summary_writer({str(tmp_path)!r}, purge_step=1)
      writer.add_scalar('val/accuracy', 0.5, 1)
      writer.close()
      assert 'torch' not in sys.modules
      if importlib.util.find_spec('torch'):
        import torch
  ''')
  done = subprocess.run([sys.executable, '-c', script], cwd=ROOT,
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  (events,) = os.listdir(tmp_path)
  assert b'val/accuracy' in (tmp_path / events).read_bytes()
