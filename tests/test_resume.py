"""Preemption: SIGKILL / SIGTERM at random points, then the same command."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

import fakedata
from fer_jax import inference, rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PER_CLASS = 8
BATCH_SIZE = 8
STEPS_PER_EPOCH = 7 * TRAIN_PER_CLASS // BATCH_SIZE
EPOCHS = 2
# Metrics that must not depend on interruptions (timings do).
EXACT_KEYS = ('epoch', 'step', 'train/loss', 'train/accuracy',
              'train/macro_f1', 'learning_rate', 'val/loss', 'val/accuracy',
              'val/macro_f1')


@pytest.fixture(scope='module')
def csv_path(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('data') / 'fer2013.csv')
  fakedata.write_challenge_csv(path, per_class=(TRAIN_PER_CLASS, 2, 2))
  return path


def _command(csv_path, workdir, batch_size=BATCH_SIZE, epochs=EPOCHS):
  return [sys.executable, '-m', 'fer_jax.main',
          '--config=configs/resnet_small.py', f'--workdir={workdir}',
          f'--config.data.path={csv_path}', '--config.model.stem_features=8',
          '--config.model.block_features=(8, 16)',
          f'--config.train.batch_size={batch_size}',
          f'--config.train.epochs={epochs}',
          '--config.train.checkpoint_every_steps=1',
          '--config.train.eval_batch_size=32']


def _start(csv_path, workdir, log, **settings):
  # Output to a file: a pipe nobody reads until the end would block the run
  # once full.
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.Popen(_command(csv_path, workdir, **settings), cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=log)


def _saved_steps(workdir) -> list[int]:
  latest = os.path.join(workdir, 'checkpoints', 'latest')
  if not os.path.isdir(latest):
    return []
  return [int(n) for n in os.listdir(latest) if n.isdigit()]


def _run_until_step(csv_path, workdir, step, sig, **settings):
  """Starts the command (with `_command`'s `settings`) and sends `sig` once
  checkpoint `step` exists; returns the exit status and stderr."""
  with tempfile.TemporaryFile('w+') as log:
    process = _start(csv_path, workdir, log, **settings)
    deadline = time.time() + 300
    while max(_saved_steps(workdir), default=0) < step:
      if process.poll() is not None or time.time() > deadline:
        process.kill()
        log.seek(0)
        pytest.fail(f'step {step} not reached: {log.read()[-2000:]}')
      time.sleep(0.02)
    process.send_signal(sig)
    process.wait(timeout=120)
    log.seek(0)
    return process.returncode, log.read()


def _final(workdir):
  run = rundir.RunDir(workdir, create=False)
  variables = inference.load_trained(run, 'latest').variables
  metrics = [{k: r[k] for k in EXACT_KEYS} for r in run.read_metrics()]
  return variables, metrics


@pytest.fixture(scope='module')
def uninterrupted(csv_path, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('straight'))
  result = subprocess.run(_command(csv_path, workdir), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  return {'final': _final(workdir), 'log': result.stderr}


def _assert_same(a, b):
  variables_a, metrics_a = a
  variables_b, metrics_b = b
  assert metrics_a == metrics_b
  assert jax.tree.all(jax.tree.map(np.array_equal, variables_a, variables_b))


def test_log_shows_fer_jax_info_and_no_library_info(uninterrupted):
  """14 checkpoints saved; orbax's INFO lines (about 50 a checkpoint) would
  bury the epoch lines."""
  info_lines = [line for line in uninterrupted['log'].splitlines()
                if re.match(r'I\d{4} ', line)]  # absl: I<mmdd> <time> ...
  assert any(f'epoch {EPOCHS}/{EPOCHS}: train loss' in line
             for line in info_lines)
  fer_jax_files = {os.path.basename(path) for path in glob.glob(
      os.path.join(ROOT, 'fer_jax', '**', '*.py'), recursive=True)}
  logged_from = {re.search(r' (\S+\.py):\d+\] ', line).group(1)
                 for line in info_lines}
  assert logged_from <= fer_jax_files, logged_from - fer_jax_files


def test_sigkill_and_sigterm_at_random_points_then_resume_is_exact(
    csv_path, uninterrupted, tmp_path):
  total = EPOCHS * STEPS_PER_EPOCH
  # A SIGKILL, then a SIGTERM of the resumed run, each at a random step,
  # mid-epoch or not; the last command resumes a second time.
  kill_step, term_step = sorted(np.random.default_rng().choice(
      np.arange(2, total - 1), size=2, replace=False))
  code, stderr = _run_until_step(csv_path, tmp_path, kill_step,
                                 signal.SIGKILL)
  assert code == -signal.SIGKILL, stderr
  code, stderr = _run_until_step(csv_path, tmp_path, term_step,
                                 signal.SIGTERM)
  assert code == 128 + signal.SIGTERM, stderr
  assert 'run the same command again to resume' in stderr
  assert 'Traceback' not in stderr
  saved = max(_saved_steps(tmp_path))
  assert term_step <= saved < total
  loop_state = json.load(open(os.path.join(
      tmp_path, 'checkpoints', 'latest', str(saved), 'loop', 'metadata')))
  partial = loop_state['partial_epoch'] or {'losses': []}
  assert len(partial['losses']) == saved % STEPS_PER_EPOCH
  result = subprocess.run(_command(csv_path, tmp_path), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  _assert_same(_final(tmp_path), uninterrupted['final'])
  # No duplicated or missing epochs in the metrics log.
  epochs = [r['epoch'] for r in rundir.RunDir(str(tmp_path)).read_metrics()]
  assert epochs == list(range(1, EPOCHS + 1)), (kill_step, term_step)


def test_sigterm_with_one_step_per_epoch_stops_after_the_epoch(csv_path,
                                                               tmp_path):
  """With one step an epoch no step is mid-epoch: the signal is acted on
  once the epoch's checkpoint is saved, not when the run ends."""
  code, stderr = _run_until_step(csv_path, tmp_path, 1, signal.SIGTERM,
                                 batch_size=7 * TRAIN_PER_CLASS, epochs=50)
  assert code == 128 + signal.SIGTERM, stderr
  assert re.search(r'Stopped by SIGTERM after epoch \d+ at step \d+; a '
                   'checkpoint is saved', stderr), stderr
  assert 'Traceback' not in stderr
  # The epoch it stopped after is the last one saved and logged.
  saved = max(_saved_steps(tmp_path))
  epochs = [r['epoch'] for r in rundir.RunDir(str(tmp_path)).read_metrics()]
  assert epochs == list(range(1, saved + 1)), (saved, epochs)
