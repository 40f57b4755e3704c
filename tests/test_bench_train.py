"""experiments/bench_train.py, where issue 7's figures and the device
session's come from: it runs, prints its table, and ends with the line
that scripts parse."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST_LINE = re.compile(r'resnet_small train_step img/s: jax=([\d.]+) '
                       r'torch=([\d.]+|n/a) ratio=([\d.]+|n/a)')


def test_benchmark_prints_a_row_per_framework_and_the_ratio(tmp_path):
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'bench_train.py'),
       '--model=resnet_small', '--steps=2', '--warmup=1', '--batch_size=8',
       f'--data={tmp_path / "absent.csv"}'],  # Synthetic faces.
      capture_output=True, text=True, check=False, timeout=300,
      # A preloaded library (there, a malloc such as tcmalloc) is named in
      # the header; the C library itself is harmless to preload.
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'LD_PRELOAD': 'libc.so.6'})
  assert done.returncode == 0, done.stderr[-3000:]
  assert ('LD_PRELOAD libc.so.6; batch 8, 2 timed steps after 1; data '
          'synthetic') in done.stdout
  assert '| jax | resnet_small | 417,287 | cpu x1' in done.stdout
  match = LAST_LINE.fullmatch(done.stdout.splitlines()[-1])
  assert match, done.stdout
  jax_rate, torch_rate, ratio = match.groups()
  assert float(jax_rate) > 0
  if importlib.util.find_spec('torch') is None:
    assert (torch_rate, ratio) == ('n/a', 'n/a')
  else:
    assert '| torch | resnet_small | 417,287 | cpu' in done.stdout
    # Of the unrounded rates.
    assert float(ratio) == pytest.approx(
        float(jax_rate) / float(torch_rate), rel=0.02, abs=0.006)
