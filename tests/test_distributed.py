"""Two processes (jax.distributed, CPU collectives over Gloo), and one process
on two CPU devices (config.cpu_devices), train what one process on one device
does: same global batches, same losses, parameters and checkpoints.

Two `python -m fer_jax.main` processes share a coordinator port on
localhost, a third splits the CPU in two, while the test trains the same
config alone, in-process. SGD,
because with Adam the stem conv's bias follows rounding noise (see
test_multidevice.py).
"""

import os
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import fakedata
from fer_jax import inference, rundir, sweeps
from fer_jax.config import default_config
from fer_jax.data import pipeline, sources
from fer_jax.errors import UserError
from fer_jax.train import loop, multihost

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FLAGS = ('--config=configs/resnet_small.py',
          '--config.model.stem_features=8',
          '--config.model.block_features=(8,16)',
          '--config.train.epochs=1', '--config.train.batch_size=16',
          '--config.train.optimizer=sgd', '--config.train.learning_rate=0.01',
          '--config.train.eval_batch_size=16')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _config(data: str) -> ml_collections.ConfigDict:
  """The config that _FLAGS make (for the in-process run)."""
  config = sweeps.load_config(os.path.join(_ROOT, 'configs',
                                           'resnet_small.py'))
  config.data.path = data
  config.model.update(stem_features=8, block_features=(8, 16))
  config.train.update(epochs=1, batch_size=16, optimizer='sgd',
                      learning_rate=0.01, eval_batch_size=16)
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, str]:
  """{'one': workdir, 'two': workdir, 'two_devices': workdir} of finished
  runs: 'two' by two `python -m fer_jax.main` processes, 'two_devices' by
  one on two CPU devices, 'one' by loop.train here meanwhile."""
  root = tmp_path_factory.mktemp('distributed')
  data = str(root / 'fer2013.csv')
  fakedata.write_challenge_csv(data, per_class=(8, 2, 2))  # 3 steps of 16.
  # One CPU device per process (no 8-device flag from another test), with
  # conftest's quicker compiles.
  env = os.environ | {'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': _ROOT,
                      'XLA_FLAGS': '--xla_backend_optimization_level=0'}
  port = _free_port()
  processes = []
  for i in range(2):
    # Logs to files: a pipe nobody reads until the end blocks once full.
    with open(root / f'{i}.log', 'w') as log:
      processes.append(subprocess.Popen(
          [sys.executable, '-m', 'fer_jax.main', *_FLAGS,
           f'--config.data.path={data}', f'--workdir={root / "two"}',
           f'--config.distributed.coordinator_address=localhost:{port}',
           '--config.distributed.num_processes=2',
           f'--config.distributed.process_id={i}'],
          cwd=_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  with open(root / 'two_devices.log', 'w') as log:
    # JAX logs each copy between devices that it makes unasked, such as of a
    # step's input placed elsewhere than the state: none should be made.
    processes.append(subprocess.Popen(
        [sys.executable, '-m', 'fer_jax.main', *_FLAGS,
         f'--config.data.path={data}', f'--workdir={root / "two_devices"}',
         '--config.cpu_devices=2'],
        cwd=_ROOT, env=env | {'JAX_TRANSFER_GUARD_DEVICE_TO_DEVICE': 'log'},
        stdout=log, stderr=subprocess.STDOUT))
  logs = ('0.log', '1.log', 'two_devices.log')
  try:
    loop.train(_config(data), str(root / 'one'))
    for i, process in enumerate(processes):
      code = process.wait(timeout=600)
      assert code == 0, (root / logs[i]).read_text()[-3000:]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  two_devices_log = (root / 'two_devices.log').read_text()
  assert 'on 2 cpu device(s)' in two_devices_log
  assert 'device-to-device transfer' not in two_devices_log
  return {k: str(root / k) for k in ('one', 'two', 'two_devices')}


def _close(a, b, what):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                          jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-5,
                               err_msg=f'{what}{jax.tree_util.keystr(path)}')


@pytest.mark.parametrize('layout', ['two', 'two_devices'])
def test_two_processes_or_devices_train_what_one_does(runs, layout):
  one, two = (rundir.RunDir(runs[k], create=False) for k in ('one', layout))
  [record_one], [record_two] = one.read_metrics(), two.read_metrics()
  assert record_one['step'] == record_two['step'] == 3
  for key in ('train/loss', 'train/accuracy', 'val/loss', 'val/accuracy'):
    assert abs(record_one[key] - record_two[key]) <= 1e-5, key
  for kind in ('latest', 'best'):
    _close(inference.load_trained(one, kind).variables,
           inference.load_trained(two, kind).variables, kind)
  # Process 0 alone wrote the report (of the best epoch, the first) and the
  # TensorBoard events.
  assert two.read_json(rundir.REPORT)['val']['accuracy'] == pytest.approx(
      record_one['val/accuracy'], abs=1e-6)
  assert len(os.listdir(two.file(rundir.TENSORBOARD))) == 1


def test_processes_share_each_global_batch_in_order():
  """Process shares of a step, in process order, are the one-process batch:
  same faces, order and augmentation, so the step computes the same."""
  images = np.random.default_rng(0).integers(0, 256, (40, 48, 48), np.uint8)
  split = sources.Split(images, np.arange(40, dtype=np.int32) % 7)
  augment = default_config().data.augment

  def stream(batch_size, **kwargs):
    return iter(pipeline.train_dataset(split, batch_size=batch_size, seed=0,
                                       augment_config=augment, **kwargs))

  whole = stream(8)
  shares = [stream(4, process_index=p, process_count=2) for p in range(2)]
  for _ in range(7):  # Across an epoch's end.
    batch, parts = next(whole), [next(s) for s in shares]
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          batch[key], np.concatenate([part[key] for part in parts]))
  assert shares[0].get_state() == shares[1].get_state() == whole.get_state()


def test_distributed_runtime_starts_only_when_asked(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda **kwargs: calls.append(kwargs))
  settings = default_config().distributed
  multihost.initialize(settings)
  assert not calls  # One process by default.
  settings.update(coordinator_address='10.0.0.1:1234', num_processes=4,
                  process_id=3)
  multihost.initialize(settings)
  settings.update(coordinator_address='', num_processes=0, process_id=-1)
  multihost.initialize(settings)
  assert calls == [
      {'coordinator_address': '10.0.0.1:1234', 'num_processes': 4,
       'process_id': 3},
      {'coordinator_address': None, 'num_processes': None,
       'process_id': None}]  # Found from the cluster (Slurm, MPI, TPU).

  def fail(**kwargs):
    raise ValueError(f'no cluster found ({kwargs})')
  monkeypatch.setattr(jax.distributed, 'initialize', fail)
  with pytest.raises(UserError, match='no cluster found'):
    multihost.initialize(settings)


def test_an_existing_process_group_must_match(monkeypatch):
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: True)
  monkeypatch.setattr(jax.distributed, 'initialize', pytest.fail)
  settings = default_config().distributed
  settings.num_processes = 0
  multihost.initialize(settings)
  settings.num_processes = jax.process_count() + 1
  with pytest.raises(UserError, match='already runs in a group of 1'):
    multihost.initialize(settings)
