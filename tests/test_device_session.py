"""What a device call needs, checked here: experiments/device_pack.py gives
FER2013 and FER+ back byte for byte, or an error that says why, and
experiments/device_session.sh parses (tests cannot run it: it needs the
device; its header says how to try it on the CPU)."""

import importlib.util
import os
import subprocess
import sys

import pytest

import fakedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'experiments', 'device_pack.py')
SESSION = os.path.join(ROOT, 'experiments', 'device_session.sh')


def _load_device_pack():
  spec = importlib.util.spec_from_file_location('device_pack', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def device_pack():
  return _load_device_pack()


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
