"""Bad inputs, clear answers (issue 8): the cases not covered elsewhere.

Config mistakes go through `python -m fer_jax.main` as a user types them: one
`error:` line on stderr, exit status 2, nothing trained. Bad records of every
form are in test_sources.py; the README's "Bad inputs and what you see" table
maps each case to its test.
"""

import os
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakedata
from conftest import encode
from test_loop import tiny_config
from fer_jax import inference, rundir
from fer_jax.data import sources
from fer_jax.errors import UserError
from fer_jax.train import config_check, loop, step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Wall-clock fields of a metrics.jsonl record; everything else is exact.
TIMING_KEYS = ('train_seconds', 'train_images_per_second')


def _main(*overrides, workdir):
  """`python -m fer_jax.main` on a tiny model, as a user would run it."""
  command = [sys.executable, '-m', 'fer_jax.main',
             '--config=configs/resnet_small.py', f'--workdir={workdir}',
             '--config.model.stem_features=8', '--config.train.epochs=1',
             '--config.train.batch_size=16', *overrides]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=300)


def _assert_one_line_error(result, workdir, *fragments) -> None:
  """Exit 2, a single `error:` line naming `fragments`, nothing trained."""
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: '), lines[0]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  # The model is printed once it is built; nothing got that far.
  assert result.stdout == ''
  if os.path.isdir(workdir):
    assert not os.listdir(workdir), os.listdir(workdir)


def one_block_config(data_path, **train):
  """test_loop's tiny config with one block: compiles in half the time."""
  config = tiny_config(data_path, epochs=2, **train)
  config.model.block_features = (8,)
  return config


# ------------------------------------------------------------------ Config.


# With an override after --config as well (absl then stops before parsing
# --config itself).
@pytest.mark.parametrize('module,config,listed,overrides', [
    ('fer_jax.main', 'configs/resnet_smal.py', 'resnet_small.py, ', []),
    # experiments/ also holds scripts, which are not listed.
    ('fer_jax.sweep', 'experiments/resnet_small.py', 'resnet_small_sweep.py',
     ['--config.train.epochs=1']),
])
def test_missing_config_file_lists_the_config_files_beside_it(
    tmp_path, module, config, listed, overrides):
  result = subprocess.run(
      [sys.executable, '-m', module, f'--config={config}',
       f'--workdir={tmp_path}', *overrides],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  _assert_one_line_error(result, tmp_path, f'--config={config}: no such file',
                         listed)
  assert 'bench_train.py' not in result.stderr


@pytest.mark.parametrize('config,fragments,overrides', [
    ('pyproject.toml', ('cannot be loaded as a config file',
                        'pyproject.toml, line'), []),
    # The file is named, not the override.
    ('fer_jax/cli.py', ("no attribute 'get_config'",
                        'A config file defines get_config()'),
     ['--config.train.epochs=1']),
])
def test_a_file_that_is_no_config_file_is_named(tmp_path, config, fragments,
                                                overrides):
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.main', f'--config={config}',
       f'--workdir={tmp_path}', *overrides],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  _assert_one_line_error(result, tmp_path, f'--config={config}', *fragments)


def test_unknown_model_name_lists_the_models(csv_path, tmp_path):
  result = _main(f'--config.data.path={csv_path}',
                 '--config.model.name=resnet_huge', workdir=tmp_path)
  _assert_one_line_error(result, tmp_path, "'resnet_huge'",
                         'config.model.name', 'resnet_small')


def test_unknown_optimizer_name_lists_the_optimizers(csv_path, tmp_path):
  result = _main(f'--config.data.path={csv_path}',
                 '--config.train.optimizer=adagrad', workdir=tmp_path)
  _assert_one_line_error(result, tmp_path, "'adagrad'",
                         'config.train.optimizer', "'adam'", "'adamw'",
                         "'sgd'")


def test_missing_data_path_is_named(tmp_path):
  missing = str(tmp_path / 'nowhere' / 'fer2013.csv')
  workdir = tmp_path / 'run'
  result = _main(f'--config.data.path={missing}', workdir=workdir)
  _assert_one_line_error(result, workdir,
                         f'Dataset path {missing} does not exist',
                         'Accepted forms')


def test_unwritable_workdir_is_named(csv_path, tmp_path):
  (tmp_path / 'a_file').write_text('not a directory\n')
  workdir = tmp_path / 'a_file' / 'run'  # Under a regular file.
  result = _main(f'--config.data.path={csv_path}', workdir=workdir)
  _assert_one_line_error(result, workdir,
                         f'Cannot write to workdir {workdir}', '--workdir')


@pytest.mark.parametrize('override,names', [
    ('--config.train.epochs=three', ('--config.train.epochs=three',
                                     "'three'")),
    # A tuple override takes elements of any type; the model check stops it.
    ('--config.model.block_features=abc', ('config.model', "('abc',)")),
])
def test_override_of_the_wrong_type_is_one_line(csv_path, tmp_path, override,
                                                names):
  result = _main(f'--config.data.path={csv_path}', override, workdir=tmp_path)
  _assert_one_line_error(result, tmp_path, *names)


def test_fractional_warmup_override_parses_then_fails_its_bound(csv_path,
                                                                tmp_path):
  result = _main(f'--config.data.path={csv_path}',
                 '--config.train.warmup_epochs=-0.5', workdir=tmp_path)
  _assert_one_line_error(result, tmp_path, 'config.train.warmup_epochs=-0.5 '
                         'must be >= 0 (0: no warm-up).')


# The other bounds in-process: a command each would add minutes to the suite.
@pytest.mark.parametrize('setting,value,rule', [
    ('warmup_epochs', -1.0, 'must be >= 0 (0: no warm-up)'),
    ('plateau_factor', 0.0, 'must be in (0, 1]'),
    ('plateau_factor', 1.5, 'must be in (0, 1]'),
    ('label_smoothing', 1.0, 'must be in [0, 1)'),
    ('label_smoothing', -0.1, 'must be in [0, 1)'),
    ('early_stopping_patience', -1, 'must be >= 0 (0: no early stopping)'),
    ('log_every_steps', 0, 'must be >= 1'),
    ('ema_decay', 1.0, 'must be in [0, 1)'),
])
def test_out_of_range_train_setting_is_named_with_its_bound(
    csv_path, setting, value, rule):
  with pytest.raises(UserError) as error:
    config_check.check(one_block_config(csv_path, **{setting: value}))
  message = str(error.value)
  assert message.startswith(f'config.train.{setting}={value!r} {rule}'), (
      message)
  assert '\n' not in message


@pytest.mark.parametrize('metric', ['val/macro-f1', 'val/f1', 'val/f2/happy'])
def test_mistyped_selection_metric_fails_before_the_data_is_read(csv_path,
                                                                 metric):
  config = one_block_config(csv_path, selection_metric=metric)
  with pytest.raises(UserError, match=(
      f"^config.train.selection_metric='{metric}' is not logged; choose one "
      r"of \[.*'val/f1/<class>'.*'val/macro_f1'")):
    config_check.check(config)


def test_unknown_config_key_is_one_line(csv_path, tmp_path):
  result = _main(f'--config.data.path={csv_path}', '--config.train.epocs=3',
                 workdir=tmp_path)
  _assert_one_line_error(result, tmp_path, '--config.train.epocs=3',
                         'Did you mean "epochs"')


@pytest.mark.parametrize('command', ['fer_jax.main', 'fer_jax.sweep',
                                     'fer_jax.report', 'fer_jax.release',
                                     'fer_jax.convert'])
def test_an_unknown_flag_is_one_line_in_every_absl_command(command):
  # python -m fer_jax.predict and fer_jax.export parse with argparse, whose
  # usage line comes with its error.
  result = subprocess.run([sys.executable, '-m', command, '--nosuchflag=1'],
                          capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "error: Unknown command line flag 'nosuchflag'. Pass --helpfull for "
      'the flags.']


@pytest.mark.parametrize('command', ['fer_jax.main', 'fer_jax.sweep',
                                     'fer_jax.report', 'fer_jax.release',
                                     'fer_jax.export.__main__'])
def test_flags_are_parsed_before_the_training_stack_is_imported(command):
  """A mistyped flag or override is answered in 0.2-0.4 s, not after the
  1.4-2.3 s that these take to import (BENCHMARKS, "Start-up"). The sweep
  command parses a sweep file as its config, which imports fer_jax.sweeps."""
  heavy = ('jax', 'flax', 'optax', 'orbax', 'grain', 'matplotlib', 'sklearn')
  result = subprocess.run(
      [sys.executable, '-c', f'import sys, {command}, fer_jax.sweeps; '
       f'print(sorted(set({heavy!r}) & set(sys.modules)))'],
      capture_output=True, text=True, cwd=ROOT, check=True, timeout=60)
  assert result.stdout.strip() == '[]'


# -------------------------------------------------------------------- Data.


def test_bad_csv_row_stops_the_command_naming_file_and_row(tmp_path):
  path = str(tmp_path / 'fer2013.csv')
  fakedata.write_challenge_csv(path, per_class=(12, 4, 4))
  with open(path) as f:
    lines = f.readlines()
  lines[6] = lines[6].replace(',', ',1 ', 1)  # 2305 values on file line 7.
  with open(path, 'w') as f:
    f.writelines(lines)
  workdir = tmp_path / 'run'
  result = _main(f'--config.data.path={path}', workdir=workdir)
  _assert_one_line_error(result, workdir, f'{path} row 7: pixels are not 2304',
                         '--config.data.on_bad_record=skip')


def test_other_image_modes_are_converted_to_grey(synthetic_fer):
  # Sizes and RGB are in test_sources.py; these are the other PNG modes.
  fer = synthetic_fer
  grey = next(r.image for r in fer.records if r.usage == 'Training')
  rgba = np.dstack([cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR),
                    np.full_like(grey, 128)])
  extra = {'train/angry/Training_9001.png': encode(rgba, '.png'),
           'train/angry/Training_9002.png': encode(
               grey.astype(np.uint16) * 257, '.png')}
  data = sources.load(fer.write_folder(extra=extra))
  assert data.skipped == {}
  train = data.splits['train']
  assert len(train) == 21 + 2
  matches = [i for i, image in enumerate(train.images)
             if np.array_equal(image, grey)]
  assert len(matches) == 3  # The record itself, RGBA and 16-bit.


# ---------------------------------------------------------------- Numerics.


def _nan_from_step(bad_step):
  """A `step.make_train_step` whose loss and params turn NaN at `bad_step`,
  as after an exploding update."""
  make_train_step = step.make_train_step

  def make(*args, **kwargs):
    train_step = make_train_step(*args, **kwargs)

    def poisoned(state, batch, rng):
      state, results = train_step(state, batch, rng)
      bad = state.step >= bad_step
      params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p),
                            state.params)
      loss = jnp.where(bad, jnp.nan, results['loss'])
      return state.replace(params=params), {**results, 'loss': loss}
    return poisoned
  return make


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(
    csv_path, tmp_path, monkeypatch):
  # 84 train images in batches of 16: 5 steps an epoch; checkpoints at steps
  # 3, 5 (epoch end), 8, ... NaN from step 7, in epoch 2: checkpoint 8 would
  # hold NaN weights.
  monkeypatch.setattr(step, 'make_train_step', _nan_from_step(7))
  config = one_block_config(csv_path, checkpoint_every_steps=3)
  with pytest.raises(UserError) as error:
    loop.train(config, str(tmp_path))
  message = str(error.value)
  assert message.startswith('The training loss became nan at step 7 (epoch '
                            '2)'), message
  assert f'The last good checkpoint (step 5) is kept in {tmp_path}' in message
  assert '\n' not in message
  run = rundir.RunDir(str(tmp_path))
  assert run.latest_step('latest') == run.latest_step('best') == 5
  assert [r['epoch'] for r in run.read_metrics()] == [1]
  variables = inference.load_trained(run, 'latest').variables
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


# ------------------------------------------------------------- Determinism.


def test_same_config_and_seed_give_identical_metrics(tmp_path):
  # Two bad rows, skipped: the count is in dataset.json, nothing silent.
  path = str(tmp_path / 'fer2013.csv')
  fakedata.write_challenge_csv(path, per_class=(12, 4, 4))
  with open(path) as f:
    lines = f.readlines()
  lines[3] = '9' + lines[3][1:]  # Emotion 9.
  lines[8] = lines[8].rsplit(' ', 1)[0] + ',Training\n'  # 2303 values.
  with open(path, 'w') as f:
    f.writelines(lines)
  config = one_block_config(path)
  config.data.on_bad_record = 'skip'
  runs = [loop.train(config, str(tmp_path / name))[0]
          for name in ('first', 'second')]

  first, second = ([{k: v for k, v in record.items() if k not in TIMING_KEYS}
                    for record in run.read_metrics()] for run in runs)
  assert [r['epoch'] for r in first] == [1, 2]
  assert first == second
  # The same weights, though orbax's files differ (random names, times).
  assert runs[0].checkpoint_sha256() == runs[1].checkpoint_sha256()
  info = runs[0].read_json(rundir.DATASET)
  assert info == runs[1].read_json(rundir.DATASET)
  assert info['skipped_records'] == {
      "unknown emotion '9' (expected 0-6)": 1,
      'pixels are not 2304 integers in 0-255': 1}
  assert info['split_sizes'] == {'train': 82, 'val': 28, 'test': 28}
