"""config.cpu_devices: how many JAX devices the CPU is split into.

Each case runs in a fresh process: the count is fixed when JAX starts its
backends, and this process's started long ago. (A two-device training run is
in test_distributed.py.)
"""

import json
import os
import subprocess
import sys

import pytest

from fer_jax.errors import UserError
from fer_jax.train import cpu_devices

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _in_fresh_process(code: str, **env) -> dict:
  """Runs `code` after `import jax` and `from fer_jax.train import
  cpu_devices` in a new process whose environment is this one's without a
  device count, plus `env`; returns what it prints last, as JSON."""
  base = {k: v for k, v in os.environ.items()
          if k not in ('JAX_NUM_CPU_DEVICES', 'XLA_FLAGS')}
  script = ('import json, jax\n'
            'from fer_jax.errors import UserError\n'
            'from fer_jax.train import cpu_devices\n' + code)
  done = subprocess.run([sys.executable, '-c', script], cwd=_ROOT,
                        env=base | {'JAX_PLATFORMS': 'cpu'} | env,
                        capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('batch_size, cores, expected', [
    (64, 2, 2), (64, 16, 16), (60, 8, 6), (7, 2, 1), (64, 1, 1), (64, 0, 1)])
def test_auto_is_one_device_per_core_that_splits_the_batch(batch_size, cores,
                                                           expected):
  assert cpu_devices.auto_count(batch_size, cores) == expected


def test_a_negative_count_is_a_user_error():
  with pytest.raises(UserError, match='cpu_devices=-2'):
    cpu_devices.split(-2, 64)


def test_split_before_jax_starts():
  report = _in_fresh_process(
      'cpu_devices.split(3, 48)\n'
      'print(json.dumps({"devices": jax.device_count()}))')
  assert report == {'devices': 3}
  report = _in_fresh_process(
      'cpu_devices.split(0, 64)\n'
      'print(json.dumps({"devices": jax.device_count(),'
      ' "auto": cpu_devices.auto_count(64, cpu_devices.available_cores())}))')
  assert report['devices'] == report['auto']


def test_auto_keeps_a_count_chosen_elsewhere():
  code = ('cpu_devices.split(0, 64)\n'
          'print(json.dumps({"devices": jax.device_count()}))')
  assert _in_fresh_process(code, JAX_NUM_CPU_DEVICES='3') == {'devices': 3}
  assert _in_fresh_process(
      code, XLA_FLAGS='--xla_force_host_platform_device_count=5'
  ) == {'devices': 5}
  # Several processes share the machine's cores: auto splits nothing.
  assert _in_fresh_process(
      'cpu_devices.split(0, 64, num_processes=2)\n'
      'print(json.dumps({"devices": jax.device_count()}))') == {'devices': 1}


def test_after_jax_started_only_auto_goes_on():
  report = _in_fresh_process(
      'jax.devices()\n'
      'cpu_devices.split(0, 64)\n'
      'try:\n'
      '  cpu_devices.split(3, 48)\n'
      '  error = ""\n'
      'except UserError as e:\n'
      '  error = str(e)\n'
      'print(json.dumps({"devices": jax.device_count(), "error": error}))')
  assert report['devices'] == 1
  assert 'cpu_devices=3' in report['error']
  assert 'fresh process' in report['error']


def test_config_checks_leave_the_count_open():
  # A sweep checks every run's config, init_from included, before its first
  # run sets the device count; the checks must not start JAX.
  report = _in_fresh_process(
      'from fer_jax import sweeps\n'
      'from fer_jax.train import config_check\n'
      'config = sweeps.load_config("configs/resnet_small_v2.py")\n'
      'config.model.init_from = "fer_jax/pretrained"\n'
      'config_check.check(config)\n'
      'cpu_devices.split(3, 48)\n'
      'print(json.dumps({"devices": jax.device_count()}))')
  assert report == {'devices': 3}
