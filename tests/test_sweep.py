"""Sweeps: expansion and names, checks before training, skip and resume,
subprocess runs, and the summary tables."""

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import fakedata
from fer_jax import rundir, sweep_runner, sweeps
from fer_jax.errors import UserError
from fer_jax.predict.predictor import PRETRAINED_DIR
from fer_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
RESNET_SMALL = os.path.join(ROOT, 'configs', 'resnet_small.py')
# A sweep over the tiny model of test_loop; `tests/` must be importable.
TINY_SWEEP = '''
from test_loop import tiny_config

DROPOUTS = {dropouts}


def get_config():
  return tiny_config('', epochs=1)


def sweep(add):
  for dropout in DROPOUTS:
    add(**{'model.dropout': dropout})
'''


def _experiment(name):
  return os.path.join(ROOT, 'experiments', f'{name}_sweep.py')


def _load(config_file, workdir='sweep', **global_overrides):
  """Sweep.load as `python -m fer_jax.sweep` does it, without flags."""
  base = sweeps.resolve(sweeps.load_config(config_file), global_overrides)
  return sweep_runner.Sweep.load(config_file, base, global_overrides, workdir)


def test_resnet_small_sweep_is_the_exact_product():
  runs = sweeps.expand(sweeps.load_sweep_fn(_experiment('resnet_small')))
  expected = [(f'optimizer={o},learning_rate={lr},dropout={d}',
               {'train.optimizer': o, 'train.learning_rate': lr,
                'model.dropout': d})
              for o in ('adam', 'sgd') for lr in (0.001, 0.01)
              for d in (0.0, 0.15, 0.2)]
  assert runs == expected


@pytest.mark.parametrize('name, count, first', [
    ('resnet_small', 12, 'optimizer=adam,learning_rate=0.001,dropout=0.0'),
    ('learning_rate', 5, 'learning_rate=0.0001'),
    ('classes', 9, 'classes=angry+disgust+fear+happy+sad+surprise+neutral,'
                   'max_per_class=500'),
    ('augmentation', 8, 'geometric=on,photometric=on,class_weights=none'),
    ('accuracy_ablation', 10, 'base'),
    ('large_model', 2, 'seed=0'),
    ('finetune_ablation', 7, 'base'),
    ('ferplus_modes', 4, 'label_mode=majority'),
    ('shipped_model', 5, '1_cosine8'),
])
def test_shipped_sweeps_expand_and_pass_the_checks(name, count, first):
  # The FER+ sweep needs the votes file, as its docstring's command gives.
  overrides = ({'data.ferplus_path': 'fer2013new.csv'}
               if name == 'ferplus_modes' else {})
  sweep = _load(_experiment(name), **overrides)
  assert len(sweep.runs) == count
  assert sweep.runs[0].name == first
  assert len({run.name for run in sweep.runs}) == count


def test_shipped_model_sweep_is_the_shipped_models_recipe():
  sweep = _load(_experiment('shipped_model'), workdir='runs/shipped',
                **{'data.path': 'fer2013.tar.gz'})
  for before, run in zip(sweep.runs, sweep.runs[1:]):
    assert run.after == (before.name,)
    assert run.config.model.init_from == os.path.join('runs/shipped',
                                                      before.name)
  # Its last run is fer_jax/pretrained's config, but for where it started
  # and the CPU's convolution library, a setting the shipped run predates
  # (it trained under XLA's default: cpu_convolutions.setting).
  last = rundir.as_json(sweep.runs[-1].config)
  shipped = rundir.RunDir(PRETRAINED_DIR, create=False).read_json(
      rundir.CONFIG)
  for config in last, shipped:
    config['model'].pop('init_from')
    config['data'].pop('path')
  assert last.pop('cpu_convolutions') == 'eigen'
  assert last == shipped


def test_names_are_safe_folder_names():
  assert sweeps.run_name({'model.block_features': (8, 16),
                          'data.classes': 'happy,sad', 'data.path': 'a/b c',
                          'train.nesterov': True}) == (
      'block_features=8-16,classes=happy+sad,path=a_b_c,nesterov=True')
  assert sweeps.run_name({}) == 'base'


def _resnet_small_sweep_file(tmp_path, body: str) -> str:
  """A sweep file over configs/resnet_small.py whose sweep(add) is `body`."""
  sweep_file = tmp_path / 'bad_sweep.py'
  sweep_file.write_text(
      'from fer_jax import sweeps\n'
      'def get_config():\n'
      f'  return sweeps.load_config({RESNET_SMALL!r})\n'
      'def sweep(add):\n'
      f'  {body}\n')
  return str(sweep_file)


def test_overrides_are_checked_before_any_run(tmp_path):
  with pytest.raises(UserError, match='--config.model.dropout is given on '
                     'the command line and varied by the sweep'):
    _load(_experiment('resnet_small'), **{'model.dropout': 0.1})
  with pytest.raises(UserError, match=r'Cannot set config.train.learing_rate'):
    sweeps.resolve(_load(_experiment('learning_rate')).runs[0].config,
                   {'train.learing_rate': 0.1})
  sweep_file = _resnet_small_sweep_file(
      tmp_path, "add(**{'train.optimizer': 'adagrad', "
      "'train.learning_rate': 1e-4})")
  with pytest.raises(UserError, match=r"Sweep run optimizer=adagrad,"
                     r"learning_rate=0.0001: config.train.optimizer="
                     r"'adagrad' is not one of"):
    _load(sweep_file)


def _sweep_command(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [TESTS, os.environ.get('PYTHONPATH', '')]))
  return subprocess.run([sys.executable, '-m', 'fer_jax.sweep', *args],
                        capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=300)


def test_unknown_model_stops_the_sweep_before_training(tmp_path):
  result = _sweep_command(f'--config={_experiment("mobilenetv2_small")}',
                          f'--workdir={tmp_path / "sweep"}',
                          '--config.model.name=mobilenet_v9')
  assert result.returncode == 2
  last_line = result.stderr.splitlines()[-1]
  assert last_line.startswith(
      'error: Sweep run dropout=0.0,weight_decay=0.0,optimizer=adam: Unknown '
      "model 'mobilenet_v9': choose config.model.name from ")
  assert 'mobilenetv2_small' in last_line and 'resnet_small' in last_line
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'sweep')


@pytest.fixture
def tiny_sweep(tmp_path, monkeypatch):
  """`make(dropouts)` -> (sweep file, data path); `tests/` is importable,
  as the sweep file needs."""
  monkeypatch.syspath_prepend(TESTS)
  data_path = str(tmp_path / 'fer2013.csv')
  fakedata.write_challenge_csv(data_path, per_class=(12, 4, 4))

  def make(dropouts):
    sweep_file = tmp_path / 'tiny_sweep.py'
    sweep_file.write_text(TINY_SWEEP.replace('{dropouts}', repr(dropouts)))
    return str(sweep_file), data_path

  return make


CHAIN_SWEEP = '''
from fer_jax import sweeps
from test_loop import tiny_config


def get_config():
  return tiny_config('', epochs=1)


def sweep(add):
  add(name='first')
  add(name='second', **{'model.init_from': sweeps.Earlier('first')})
  add(name='third', **{'model.init_from': sweeps.Earlier('second'),
                       'train.distill_from': sweeps.Earlier('first')})
'''


@pytest.fixture
def chain_sweep(tiny_sweep, tmp_path):
  """(sweep file of three runs, each from the one before; data path)."""
  _, data_path = tiny_sweep(())
  sweep_file = tmp_path / 'chain_sweep.py'
  sweep_file.write_text(CHAIN_SWEEP)
  return str(sweep_file), data_path


def test_a_run_starts_from_an_earlier_run_of_its_sweep(chain_sweep, tmp_path):
  sweep_file, data_path = chain_sweep
  workdir = str(tmp_path / 'sweep')
  # Loads and checks before any of its runs exists.
  sweep = _load(sweep_file, workdir, **{'data.path': data_path})
  assert [run.after for run in sweep.runs] == [
      (), ('first',), ('second', 'first')]
  with pytest.raises(UserError, match=r'Sweep run third starts from run '
                     r'second, which is not trained: add --run=second'):
    sweep_runner.run_sweep(sweep, workdir, names=['first', 'third'])
  sweep_runner.run_sweep(sweep, workdir)
  third = rundir.RunDir(os.path.join(workdir, 'third'), create=False)
  assert third.read_json(rundir.INIT_FROM)['path'] == os.path.abspath(
      os.path.join(workdir, 'second'))
  assert third.read_json(rundir.CONFIG)['train']['distill_from'] == (
      os.path.join(workdir, 'first'))
  assert [r['run'] for r in _summary(workdir)] == ['first', 'second', 'third']


def test_runs_after_a_failed_run_are_named_as_not_started(chain_sweep,
                                                         tmp_path):
  sweep_file, data_path = chain_sweep
  with open(sweep_file) as f:
    text = f.read()
  with open(sweep_file, 'w') as f:
    # More than the 84 training faces: 'first' fails as it loads the data.
    f.write(text.replace("add(name='first')",
                         "add(name='first', **{'train.batch_size': 128})"))
  workdir = str(tmp_path / 'sweep')
  sweep = _load(sweep_file, workdir, **{'data.path': data_path})
  with pytest.raises(UserError, match=(
      r'^1 of the 3 sweep runs trained failed \(first\), and 2 not started '
      r'as they start from a failed run \(second, third\); first: The '
      r'train split has 84 images, fewer than one batch')):
    sweep_runner.run_sweep(sweep, workdir)
  assert not os.path.exists(os.path.join(workdir, 'second'))


@pytest.mark.parametrize('line, error', [
    ("add(name='a', **{'model.init_from': sweeps.Earlier('b')})\n"
     "  add(name='b')",
     r"Sweep run a: config.model.init_from=Earlier\('b'\) names no run added "
     r"before this one; add 'b' first."),
    ("add(name='a')\n  add(name='b', **{'data.path': sweeps.Earlier('a')})",
     r"Sweep run b: config.data.path=Earlier\('a'\): only model.init_from "
     r"and train.distill_from name runs."),
])
def test_earlier_runs_are_checked(line, error, tmp_path):
  with pytest.raises(UserError, match=error):
    _load(_resnet_small_sweep_file(tmp_path, line))


def test_parallel_runs_wait_for_earlier_runs_and_skip_after_failures(
    chain_sweep, tmp_path, monkeypatch):
  sweep = _load(chain_sweep[0], **{'data.path': chain_sweep[1]})
  lock = threading.Lock()
  events = []

  def fake_run(command, **kwargs):
    workdir, = [arg for arg in command if arg.startswith('--workdir=')]
    name = os.path.basename(workdir.removeprefix('--workdir='))
    with lock:
      events.append(f'start {name}')
    time.sleep(0.2)
    with lock:
      events.append(f'end {name}')
    return subprocess.CompletedProcess(command, 1 if name == failing else 0)

  monkeypatch.setattr(sweep_runner, 'device_slots', lambda: ['0', '1', '2'])
  monkeypatch.setattr(sweep_runner.subprocess, 'run', fake_run)
  failing = None
  runs = [*sweep.runs, dataclasses.replace(sweep.runs[0], name='free')]
  assert sweep_runner._train_in_subprocesses(  # pylint: disable=protected-access
      sweep, runs, str(tmp_path), 1) == {}
  # 'free' needs no earlier run: it trains beside 'first'.
  assert sorted(events[:2]) == ['start first', 'start free']
  assert events.index('start second') > events.index('end first')
  assert events.index('start third') > events.index('end second')
  events.clear()
  failing = 'second'
  failures = sweep_runner._train_in_subprocesses(  # pylint: disable=protected-access
      sweep, sweep.runs, str(tmp_path), 1)
  assert list(failures) == ['second', 'third']
  assert failures['third'] == ('not started: it starts from second, which '
                               'failed')
  assert 'start third' not in events


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.csv')) as f:
    return list(csv.DictReader(f))


def test_sequential_sweep_skips_finished_runs(tiny_sweep, tmp_path,
                                              monkeypatch):
  sweep_file, data_path = tiny_sweep((0.0, 0.2))
  workdir = str(tmp_path / 'sweep')
  sweep = _load(sweep_file, **{'data.path': data_path})
  summary = sweep_runner.run_sweep(sweep, workdir)

  rows = _summary(workdir)
  assert [(r['run'], r['dropout'], r['epochs']) for r in rows] == [
      ('dropout=0.0', '0.0', '1'), ('dropout=0.2', '0.2', '1')]
  assert summary == os.path.join(workdir, 'summary.md')
  for run in sweep.runs:
    run_dir = rundir.RunDir(os.path.join(workdir, run.name), create=False)
    assert run_dir.read_json(rundir.CONFIG) == rundir.as_json(run.config)
  report = os.path.join(workdir, 'dropout=0.0', rundir.REPORT)
  finished_at = os.path.getmtime(report)

  def no_training(*args):
    raise AssertionError(f'trained again: {args}')

  monkeypatch.setattr(loop, 'train', no_training)
  sweep_runner.run_sweep(sweep, workdir)
  assert os.path.getmtime(report) == finished_at
  # Naming one run (--run) still tabulates every finished run.
  sweep_runner.run_sweep(sweep, workdir, names=['dropout=0.2'])
  assert [r['run'] for r in _summary(workdir)] == [
      'dropout=0.0', 'dropout=0.2']
  # Another config (here more epochs) is not finished: its run resumes.
  longer = _load(sweep_file, **{'data.path': data_path, 'train.epochs': 2})
  assert not sweep_runner.is_finished(os.path.join(workdir, 'dropout=0.0'),
                                longer.runs[0].config)


def test_subprocess_sweep_trains_with_the_same_config(tiny_sweep, tmp_path):
  sweep_file, data_path = tiny_sweep((0.2,))
  workdir = tmp_path / 'sweep'
  result = _sweep_command(f'--config={sweep_file}', f'--workdir={workdir}',
                          '--parallel=devices',
                          f'--config.data.path={data_path}')
  assert result.returncode == 0, result.stderr
  assert [r['run'] for r in _summary(workdir)] == ['dropout=0.2']
  with open(workdir / 'dropout=0.2' / sweep_runner.LOG) as f:
    command = f.readline()
  assert command.startswith('$ ') and '--config.model.dropout=0.2' in command
  # The run's config.json equals the in-process one: reruns skip it.
  run, = _load(sweep_file, **{'data.path': data_path}).runs
  assert sweep_runner.is_finished(str(workdir / run.name), run.config)


# A run that checkpoints for a second when stopped, as fer_jax.main does.
SLOW_TO_STOP_RUN = """
import subprocess, sys
from fer_jax import sweep_runner, sweeps

class Sweep:
  def main_command(self, run, workdir):
    return ['bash', '-c', 'trap "sleep 1; touch {done}; exit 0" TERM; '
            'touch {started}; while true; do sleep 0.1; done']

sweep_runner.device_slots = lambda: ['']
sweep_runner._train_in_subprocesses(Sweep(), [sweeps.Run('a', {{}}, None)],
                                    sys.argv[1], 1)
"""


def test_terminated_sweep_waits_for_its_runs_to_checkpoint(tmp_path):
  # `timeout` signals the whole process group, then waits for the sweep
  # only: the sweep must outlive its runs' checkpointing.
  done, started = tmp_path / 'done', tmp_path / 'started'
  sweep = subprocess.Popen(
      [sys.executable, '-c',
       SLOW_TO_STOP_RUN.format(done=done, started=started), str(tmp_path)],
      start_new_session=True, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 60
  while not started.exists():
    assert sweep.poll() is None, sweep.stderr.read()
    assert time.monotonic() < deadline
    time.sleep(0.05)
  os.killpg(sweep.pid, signal.SIGTERM)
  assert sweep.wait(timeout=30) != 0  # KeyboardInterrupt.
  assert done.exists()


@pytest.mark.parametrize('slots, runs_per_device, fraction, expected', [
    (['0'], 3, None, {('0', '0.300')}),
    (['0', '1'], 2, None, {('0', '0.450'), ('1', '0.450')}),
    (['0'], 3, '0.1', {('0', '0.1')}),  # The caller's fraction is kept.
    (['0'], 1, None, {('0', None)}),
    ([''], 3, None, {(None, None)}),  # No GPU: one run at a time on the CPU.
])
def test_runs_share_each_gpu(slots, runs_per_device, fraction, expected,
                             tiny_sweep, tmp_path, monkeypatch):
  sweep_file, data_path = tiny_sweep((0.0, 0.1, 0.2, 0.3, 0.4, 0.5))
  sweep = _load(sweep_file, **{'data.path': data_path})
  lock = threading.Lock()
  running, peak, seen = [0], [0], set()

  def fake_run(command, env, **kwargs):
    with lock:
      running[0] += 1
      peak[0] = max(peak[0], running[0])
      seen.add((env.get('CUDA_VISIBLE_DEVICES'),
                env.get(sweep_runner.MEMORY_FRACTION)))
    time.sleep(0.05)
    with lock:
      running[0] -= 1
    return subprocess.CompletedProcess(command, 0)

  monkeypatch.setattr(sweep_runner, 'device_slots', lambda: slots)
  monkeypatch.setattr(sweep_runner.subprocess, 'run', fake_run)
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
  if fraction:
    monkeypatch.setenv(sweep_runner.MEMORY_FRACTION, fraction)
  else:
    monkeypatch.delenv(sweep_runner.MEMORY_FRACTION, raising=False)
  assert sweep_runner._train_in_subprocesses(  # pylint: disable=protected-access
      sweep, sweep.runs, str(tmp_path), runs_per_device) == {}
  assert seen == expected
  assert peak[0] == (len(slots) * runs_per_device if slots != [''] else 1)


def test_run_flag_picks_runs_and_names_the_sweeps_runs_when_unknown(tmp_path):
  sweep = _experiment('accuracy_ablation')
  result = _sweep_command(f'--config={sweep}', f'--workdir={tmp_path}',
                          '--dry_run', '--run=mixup', '--run=all')
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['mixup', 'all']  # The sweep's order.
  result = _sweep_command(f'--config={sweep}', f'--workdir={tmp_path}',
                          '--dry_run', '--run=mixpu')
  assert result.returncode == 2
  assert result.stderr.splitlines()[-1] == (
      f'error: --run=mixpu: no such run in {sweep}; its runs: base, '
      'label_smoothing, erasing, mixup, cutmix, ema, adamw, plateau, '
      'resnet_small_v2, all.')
