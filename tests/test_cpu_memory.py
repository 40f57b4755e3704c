"""config.cpu_keep_memory: a worker thread's large blocks stay mapped."""

import os
import platform
import subprocess
import sys
import textwrap
import types

import pytest

from fer_jax.train import cpu_memory

# Mallocs a block larger than a thread arena's 64 MB heap from a fresh
# thread, touches every page and frees it, four times, then once more after
# give_back; prints the minor page faults of each round.
_ROUNDS = textwrap.dedent('''
    import ctypes, resource, sys, threading
    from fer_jax.train import cpu_memory
    print(cpu_memory.keep(sys.argv[1] == 'keep'))
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


def _faults_per_round(setting: str) -> tuple[bool, list[int]]:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  lines = subprocess.run([sys.executable, '-c', _ROUNDS, setting], env=env,
                         capture_output=True, text=True,
                         check=True).stdout.split()
  return lines[0] == 'True', [int(line) for line in lines[1:]]


@pytest.mark.skipif(platform.system() != 'Linux'
                    or platform.libc_ver()[0] != 'glibc',
                    reason='mallopt settings are glibc\'s')
def test_kept_blocks_are_reused_until_given_back():
  applied, kept = _faults_per_round('keep')
  assert applied
  # The first round maps the block; later ones reuse it.
  assert kept[0] > _PAGES // 2
  assert max(kept[1:4]) < _PAGES // 10, kept
  # give_back returned the pages: faulted in again.
  assert kept[4] > _PAGES // 2, kept
  applied, unmapped = _faults_per_round('default')
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
  assert not cpu_memory.keep(False)
  _platforms(monkeypatch, 'cuda')
  assert not cpu_memory.keep(True)
