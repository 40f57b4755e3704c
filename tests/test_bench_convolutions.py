"""experiments/bench_convolutions.py: a row per convolution of resnet_small
and a total, for each library."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# resnet_small's convolutions at 48x48 (configs/resnet_small.py): the stem,
# then each residual block's two 3x3 and its 1x1 projection.
CONVOLUTIONS = ['1->32 3x3 at 48x48', '32->64 3x3 at 48x48',
                '64->64 3x3 at 48x48', '32->64 1x1 at 48x48',
                '64->128 3x3 at 24x24', '128->128 3x3 at 24x24',
                '64->128 1x1 at 24x24']


def test_a_row_per_convolution_and_a_total_per_library():
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments',
                                    'bench_convolutions.py'),
       '--batch_size=2', '--repeats=1'],
      capture_output=True, text=True, check=False, timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert done.returncode == 0, done.stderr[-3000:]
  libraries = ['eigen', 'xla']
  if importlib.util.find_spec('torch'):
    libraries.append('torch')
  rows = [line.strip('|').split('|') for line in done.stdout.splitlines()
          if line.startswith('| ') and not line.startswith('| convolution')]
  assert [row[0].strip() for row in rows] == CONVOLUTIONS + ['all']
  columns = 3 * len(libraries)  # Forward, dX and dW of each.
  times = [[float(cell) for cell in row[1:]] for row in rows]
  assert all(len(row) == columns and min(row) >= 0 for row in times)
  for i, library in enumerate(libraries):
    total = re.search(rf'^{library}: forward \+ dX \+ dW = ([\d.]+) ms$',
                      done.stdout, re.MULTILINE)
    assert total, done.stdout
    # Columns are forward, dX, dW, each for every library in turn.
    assert float(total[1]) == pytest.approx(
        sum(times[-1][i::len(libraries)]), abs=0.2)
    assert float(total[1]) > 0
