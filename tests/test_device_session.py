"""What a device call needs, checked here: experiments/device_pack.py gives
FER2013 and FER+ back byte for byte, or an error that says why;
experiments/device_results.py sends back what fits of the runs and the
sha256 of the checkpoints that do not; experiments/device_session.sh
parses and gives no sweep a flag it refuses (tests cannot run it: it needs
the device; its header says how to try it on the CPU)."""

import importlib.util
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

import fakedata
from fer_jax import rundir
from fer_jax.config import default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'experiments', 'device_pack.py')
SESSION = os.path.join(ROOT, 'experiments', 'device_session.sh')


def experiment_script(name: str):
  """experiments/<name>.py, a script outside the package, as a module."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, 'experiments', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def device_pack():
  return experiment_script('device_pack')


@pytest.fixture
def downloads(tmp_path):
  csv_path = str(tmp_path / 'fer2013.csv')
  votes_path = str(tmp_path / 'fer2013new.csv')
  fakedata.write_ferplus_votes(
      votes_path, fakedata.write_challenge_csv(csv_path, per_class=(3, 1, 1)))
  return csv_path, votes_path


def _bytes(path):
  with open(path, 'rb') as f:
    return f.read()


@pytest.mark.parametrize('newline', ['\n', '\r\n'])
def test_unpack_gives_back_the_same_files(newline, device_pack, downloads,
                                          tmp_path):
  csv_path, votes_path = downloads
  with open(csv_path, newline='') as f:
    text = f.read()
  with open(csv_path, 'w', newline='') as f:
    f.write(text.replace('\n', newline))
  packed = str(tmp_path / 'packed' / 'fer.xz')
  device_pack.pack(csv_path, votes_path, packed)
  device_pack.unpack(packed, str(tmp_path / 'out'))
  for path in downloads:
    assert _bytes(tmp_path / 'out' / os.path.basename(path)) == _bytes(path)


def test_a_csv_it_cannot_write_back_is_refused(device_pack, downloads,
                                               tmp_path):
  csv_path, votes_path = downloads
  with open(csv_path) as f:
    text = f.read()
  with open(csv_path, 'w') as f:
    f.write(text.replace(' ', '  ', 1))  # Two spaces between two pixels.
  with pytest.raises(device_pack.PackError, match='not in the form'):
    device_pack.pack(csv_path, votes_path, str(tmp_path / 'fer.xz'))
  assert not os.path.exists(tmp_path / 'fer.xz')


def test_a_damaged_pack_is_one_error_line(device_pack, downloads, tmp_path):
  packed = str(tmp_path / 'fer.xz')
  device_pack.pack(*downloads, packed)
  data = bytearray(_bytes(packed))
  data[len(data) // 2] ^= 0xFF
  with open(packed, 'wb') as f:
    f.write(data)
  result = subprocess.run(
      [sys.executable, SCRIPT, 'unpack', f'--src={packed}',
       f'--out={tmp_path / "out"}'], capture_output=True, text=True,
      timeout=60)
  assert result.returncode == 2
  assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1


def test_the_session_script_parses():
  result = subprocess.run(['bash', '-n', SESSION], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr


def test_the_session_leaves_out_the_epochs_of_a_sweep_that_sets_them():
  # fer_jax.sweep refuses --config.train.epochs for a sweep that varies it.
  with open(SESSION) as f:
    script = f.read()
  check = script.split('sets_own_epochs() {', 1)[1].split('\n}\n', 1)[0]
  sweeps = [os.path.join(ROOT, 'experiments', name) for name in
            ('shipped_model_sweep.py', 'accuracy_ablation_sweep.py')]
  result = subprocess.run(
      ['bash', '-c', f'f() {{{check}\n}}; for sweep; do f "$sweep"; '
       'echo $?; done', 'check', *sweeps],
      capture_output=True, text=True, timeout=120, cwd=ROOT)
  # Exit status 0: the stages set train.epochs; 1: the ablation's do not.
  assert result.stdout.split() == ['0', '1'], result.stderr


def _sweep_run(path, weights: int, step: int) -> rundir.RunDir:
  """A run directory as a sweep on the device leaves it, its model
  `weights` float32 numbers."""
  run = rundir.RunDir(str(path))
  run.save_config(default_config())
  run.write_json(rundir.REPORT, {'test': {'accuracy': 0.5}})
  run.append_metrics({'epoch': 1, 'val/accuracy': 0.5})
  os.makedirs(run.file(rundir.TENSORBOARD))
  for name in (os.path.join(rundir.TENSORBOARD, 'events.out'),
               'confusion_matrix.png'):
    with open(run.file(name), 'wb') as f:
      f.write(b'redrawn here')
  model = {'params': {'kernel': np.linspace(0, 1, weights, dtype=np.float32)}}
  for kind in ('best', 'latest'):
    run.save(kind, step, model=model, loop={'epoch': 1})
  run.wait_until_finished()
  run.close()
  return run


def test_device_results_send_what_fits_and_name_the_rest(tmp_path):
  device_results = experiment_script('device_results')
  work = tmp_path / 'work'
  small = _sweep_run(work / 'sweep' / 'seed=0', 1_000, step=7)
  large = _sweep_run(work / 'sweep' / 'seed=1', 500_000, step=9)
  (work / 'bench.txt').write_text('| jax | resnet_small | 1 |\n')
  listed = work / 'results.list'
  assert device_results.main([f'--work={work}', f'--list={listed}',
                              '--max_mib=1', 'bench.txt', 'sweep',
                              'missing.txt']) == 0

  files = listed.read_text().split()
  assert 'bench.txt' in files and 'missing.txt' not in files
  for run in ('seed=0', 'seed=1'):
    for name in (rundir.CONFIG, rundir.METRICS, rundir.REPORT):
      assert os.path.join('sweep', run, name) in files
  assert not [f for f in files if f.endswith('.png') or '/latest/' in f
              or rundir.TENSORBOARD in f]
  assert [f for f in files if f.startswith('sweep/seed=0/checkpoints/best/')]
  assert not [f for f in files if f.startswith('sweep/seed=1/checkpoints')]
  left_out = large.read_json(rundir.CHECKPOINT_LEFT_OUT)
  assert left_out == {'kind': 'best', 'step': 9,
                      'sha256': large.checkpoint_sha256('best')}
  assert 'sweep/seed=1/' + rundir.CHECKPOINT_LEFT_OUT in files

  # What arrives here: the small run restores as it was trained.
  archive = tmp_path / 'runs.tar'
  with tarfile.open(archive, 'w') as tar:
    for name in files:
      tar.add(work / name, arcname=name, recursive=False)
  with tarfile.open(archive) as tar:
    tar.extractall(tmp_path / 'here', filter='data')
  arrived = rundir.RunDir(str(tmp_path / 'here' / 'sweep' / 'seed=0'),
                          create=False)
  assert arrived.checkpoint_sha256('best') == small.checkpoint_sha256('best')
  assert not rundir.RunDir(str(tmp_path / 'here' / 'sweep' / 'seed=1'),
                           create=False).has_checkpoint('best')
