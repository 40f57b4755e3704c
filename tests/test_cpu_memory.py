"""config.cpu_keep_memory: a worker thread's large blocks stay mapped."""

import json
import os
import platform
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from fer_jax.errors import UserError
from fer_jax.train import cpu_memory

# Mallocs a block larger than a thread arena's 64 MB heap from a fresh
# thread, touches every page and frees it, four times, then once more after
# give_back; prints the minor page faults of each round.
_ROUNDS = textwrap.dedent('''
    import ctypes, resource, sys, threading
    from fer_jax.train import cpu_memory
    print(cpu_memory.keep(int(sys.argv[1])))
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 256 << 20

    def round_trip():
      block = libc.malloc(size)
      ctypes.memset(block, 1, size)
      libc.free(block)

    for round_number in range(5):
      if round_number == 4:
        cpu_memory.give_back()
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      thread = threading.Thread(target=round_trip)
      thread.start()
      thread.join()
      print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
''')
_PAGES = (256 << 20) // os.sysconf('SC_PAGE_SIZE')


def _platforms(monkeypatch, platforms: str) -> None:
  config = types.SimpleNamespace(jax_platforms=platforms)
  monkeypatch.setattr(cpu_memory, 'jax', types.SimpleNamespace(config=config))


def _faults_per_round(steps: str) -> tuple[bool, list[int]]:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  lines = subprocess.run([sys.executable, '-c', _ROUNDS, steps], env=env,
                         capture_output=True, text=True,
                         check=True).stdout.split()
  return lines[0] == 'True', [int(line) for line in lines[1:]]


@pytest.mark.skipif(platform.system() != 'Linux'
                    or platform.libc_ver()[0] != 'glibc',
                    reason='mallopt settings are glibc\'s')
def test_kept_blocks_are_reused_until_given_back():
  applied, kept = _faults_per_round('10')
  assert applied
  # The first round maps the block; later ones reuse it.
  assert kept[0] > _PAGES // 2
  assert max(kept[1:4]) < _PAGES // 10, kept
  # give_back returned the pages: faulted in again.
  assert kept[4] > _PAGES // 2, kept
  applied, unmapped = _faults_per_round('0')
  assert not applied
  assert min(unmapped) > _PAGES // 2, unmapped


@pytest.mark.parametrize('platforms, expected', [
    ('cpu', True), ('cuda', False), ('cpu,cuda', False), ('tpu', False)])
def test_cpu_only_follows_jax_platforms(monkeypatch, platforms, expected):
  _platforms(monkeypatch, platforms)
  assert cpu_memory.cpu_only() == expected


def test_accelerator_plugin_means_not_cpu_only(monkeypatch):
  _platforms(monkeypatch, '')
  monkeypatch.setattr(cpu_memory.importlib.util, 'find_spec',
                      lambda name: object() if name == 'jax_plugins' else None)
  assert not cpu_memory.cpu_only()


def test_off_or_on_an_accelerator_changes_nothing(monkeypatch):
  def refuse(*unused_args):
    raise AssertionError('mallopt must not be loaded')
  monkeypatch.setattr(cpu_memory.ctypes, 'CDLL', refuse)
  assert not cpu_memory.keep(0)
  _platforms(monkeypatch, 'cuda')
  assert not cpu_memory.keep(10)


def test_after_step_gives_back_after_the_first_step_and_every_n(
    monkeypatch):
  given_back = []
  monkeypatch.setattr(cpu_memory, 'give_back', lambda: given_back.append(n))
  for n in range(1, 11):
    cpu_memory.after_step(n, 4, np.zeros(2))
  assert given_back == [1, 4, 8]


def test_negative_steps_are_a_user_error():
  with pytest.raises(UserError, match='cpu_keep_memory=-1'):
    cpu_memory.keep(-1)


# Trains one epoch of test_loop's tiny config with the step memory kept
# (a fresh process: the malloc settings last for the process), prints the
# epoch's metrics record.
_TRAIN = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, sys.argv[3])
    from test_loop import tiny_config
    from fer_jax.train import loop
    config = tiny_config(sys.argv[1], epochs=1)
    config.cpu_keep_memory = 2
    run, _ = loop.train(config, sys.argv[2])
    print(json.dumps(run.read_metrics()[-1]))
''')


def test_training_with_kept_memory_matches_training_without(csv_path,
                                                            tmp_path):
  from test_loop import tiny_config  # pylint: disable=import-outside-toplevel
  from fer_jax.train import loop  # pylint: disable=import-outside-toplevel
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  kept = json.loads(subprocess.run(
      [sys.executable, '-c', _TRAIN, csv_path, str(tmp_path / 'kept'),
       os.path.dirname(__file__)], env=env, capture_output=True, text=True,
      check=True).stdout.splitlines()[-1])
  run, _ = loop.train(tiny_config(csv_path, epochs=1), str(tmp_path / 'not'))
  not_kept = run.read_metrics()[-1]
  for key in ('train/loss', 'val/loss', 'val/accuracy'):
    assert kept[key] == not_kept[key], key
