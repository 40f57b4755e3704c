"""Shared fixtures: small synthetic FER2013 files in every downloaded form."""

import dataclasses
import gc
import gzip
import io
import os
import pathlib
import tarfile
import zipfile

# Compilation dominates the suite's time and many tests (and the commands
# they start in subprocesses, which inherit the environment) compile the same
# tiny models: XLA's persistent cache compiles each once. Set before JAX is
# imported, which reads these at start-up.
# In the checkout (git-ignored), so that a fresh clone starts cold.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    '.jax_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# LLVM's optimisation of XLA:CPU's generated code is most of a compile; the
# tests' tiny batches run in library kernels (convolutions, matmuls) that it
# does not touch. A quarter off the suite's time.
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_backend_optimization_level=0').strip()
# One thread per XLA computation: the README's two xdist workers fill the
# two cores, and the commands some tests start add processes; every one of
# them with its own thread pool oversubscribed the cores (a clean clone's
# suite: 9 min 7 s with this, 10 min 6 s and 10 min 30 s without, single
# runs on a box whose speed varies).
if '--xla_cpu_multi_thread_eigen' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_cpu_multi_thread_eigen=false'
# One CPU device per test process and the commands it starts, whatever
# config.cpu_devices' default would choose: the same count whichever test
# first starts JAX in a worker, and small test batches need not split. Tests
# of the split ask for theirs.
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '1')

import cv2
import numpy as np
import pytest

import fakedata
from fer_jax.data.sources import FER2013_CLASSES

USAGES = ('Training', 'PublicTest', 'PrivateTest')


def block_images(count: int, seed: int = 0) -> np.ndarray:
  """uint8 [count, 48, 48] of random 8x8 blocks: distinct, JPEG-stable."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 256, (count, 6, 6))
  return np.kron(blocks, np.ones((1, 8, 8), np.int64)).astype(np.uint8)


def encode(image: np.ndarray, ext: str) -> bytes:
  """Encodes an image array as `ext` ('.png', '.jpg', ...) bytes."""
  ok, data = cv2.imencode(ext, image)
  assert ok
  return data.tobytes()


@dataclasses.dataclass(frozen=True)
class Record:
  """One FER2013 image as the challenge CSV holds it."""
  image: np.ndarray  # uint8 [48, 48].
  label: int  # Index into FER2013_CLASSES.
  usage: str  # Training, PublicTest or PrivateTest.

  def csv_line(self) -> str:
    return f'{self.label},{" ".join(map(str, self.image.ravel()))},{self.usage}'


def make_records(per_usage=(3, 1, 1), seed: int = 0) -> list[Record]:
  """`per_usage[u]` images per class for each usage, in a shuffled row order."""
  specs = [(label, usage) for usage, count in zip(USAGES, per_usage)
           for label in range(len(FER2013_CLASSES)) for _ in range(count)]
  order = np.random.default_rng(seed).permutation(len(specs))
  images = block_images(len(specs), seed)
  return [Record(images[i], specs[j][0], specs[j][1])
          for i, j in enumerate(order)]


class SyntheticFer:
  """Writes `records` under `root` as the CSV, archive and folder forms."""

  def __init__(self, root: pathlib.Path, records: list[Record]):
    self.root = root
    self.records = records

  def csv_lines(self) -> list[str]:
    """The data lines of fer2013.csv, one per record, without the header."""
    return [record.csv_line() for record in self.records]

  def csv_text(self, lines: list[str] | None = None) -> str:
    lines = self.csv_lines() if lines is None else lines
    return 'emotion,pixels,Usage\n' + ''.join(line + '\n' for line in lines)

  def write_csv(self, name: str = 'fer2013.csv',
                lines: list[str] | None = None) -> str:
    path = self.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(self.csv_text(lines))
    return str(path)

  def write_csv_gz(self, name: str = 'fer2013.csv.gz') -> str:
    path = self.root / name
    with gzip.open(path, 'wt') as f:
      f.write(self.csv_text())
    return str(path)

  def write_tar(self, name: str = 'fer2013.tar.gz',
                members: dict[str, bytes] | None = None) -> str:
    """The Kaggle archive: fer2013/fer2013.csv beside a README."""
    if members is None:
      members = {'fer2013/README': b'FER2013 challenge data.\n',
                 'fer2013/fer2013.csv': self.csv_text().encode()}
    path = self.root / name
    with tarfile.open(path, 'w:gz') as tar:
      for member, data in members.items():
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return str(path)

  def folder_files(self, ext: str = '.png',
                   prefixes: bool = True) -> dict[str, bytes]:
    """Image-folder layout: relative path -> encoded image bytes."""
    files = {}
    for i, record in enumerate(self.records):
      top = 'train' if record.usage == 'Training' else 'test'
      stem = f'{record.usage}_{1000 + i}' if prefixes else f'{1000 + i}'
      name = f'{top}/{FER2013_CLASSES[record.label]}/{stem}{ext}'
      files[name] = encode(record.image, ext)
    return files

  def write_folder(self, name: str = 'images', ext: str = '.png',
                   prefixes: bool = True,
                   extra: dict[str, bytes] | None = None) -> str:
    files = {**self.folder_files(ext, prefixes), **(extra or {})}
    for relative, data in files.items():
      path = self.root / name / relative
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(data)
    return str(self.root / name)

  def write_zip(self, name: str = 'images.zip', ext: str = '.jpg',
                prefixes: bool = True,
                extra: dict[str, bytes] | None = None) -> str:
    """As `write_folder`, in a shuffled entry order like real zips."""
    files = {**self.folder_files(ext, prefixes), **(extra or {})}
    names = sorted(files)
    order = np.random.default_rng(len(names)).permutation(len(names))
    path = self.root / name
    with zipfile.ZipFile(path, 'w') as archive:
      for i in order:
        archive.writestr(names[i], files[names[i]])
    return str(path)


@pytest.fixture(scope='module')
def csv_path(tmp_path_factory) -> str:
  """fer2013.csv that a tiny model can learn from (fakedata): 12, 4 and 4
  images per class for Training, PublicTest, PrivateTest. Files that need
  other counts define their own."""
  path = str(tmp_path_factory.mktemp('data') / 'fer2013.csv')
  fakedata.write_challenge_csv(path, per_class=(12, 4, 4))
  return path


@pytest.fixture
def fer_records() -> list[Record]:
  """35 records: 3 Training, 1 PublicTest, 1 PrivateTest image per class."""
  return make_records()


@pytest.fixture
def synthetic_fer(tmp_path, fer_records) -> SyntheticFer:
  return SyntheticFer(tmp_path, fer_records)


@pytest.fixture
def make_synthetic_fer(tmp_path):
  """Factory: `make_synthetic_fer(per_usage, seed)` -> SyntheticFer."""
  def make(per_usage=(3, 1, 1), seed=0) -> SyntheticFer:
    return SyntheticFer(tmp_path, make_records(per_usage, seed))
  return make


# With `pytest -n 2 --dist loadgroup` (README), the tests of these files are
# spread over the workers one by one: each trains or compiles a large model
# alone. Every other file runs whole on one worker, so that its module
# fixtures (trained runs, subprocesses) are built once.
SPREAD_FILES = ('test_zoo_training.py', 'test_convert.py')
# xdist hands out its work units in collection order: the longest first, so
# that the two workers finish together (a one-minute unit drawn last keeps
# one worker alone for that minute). Files taking 40 s or more on a clean
# clone, longest first; the others follow in their usual order.
SLOWEST_FIRST = SPREAD_FILES + (
    'test_loop.py', 'test_sweep.py', 'test_real_data.py', 'test_resume.py',
    'test_export.py', 'test_bad_inputs.py', 'test_distill.py',
    'test_models.py', 'test_phases.py', 'test_report.py',
    'test_device_augment.py', 'test_distributed.py', 'test_train_step.py')


def pytest_configure(config):
  if hasattr(config.option, 'loadscopereorder'):  # xdist is installed.
    config.option.loadscopereorder = False  # It orders by test count.


def _slowness_rank(item) -> int:
  name = item.path.name
  return (SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST
          else len(SLOWEST_FIRST))


@pytest.hookimpl(tryfirst=True)  # Before xdist reads the groups.
def pytest_collection_modifyitems(items):
  items.sort(key=_slowness_rank)  # Stable: file order otherwise.
  for item in items:
    if item.path.name not in SPREAD_FILES:
      item.add_marker(pytest.mark.xdist_group(item.path.stem))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish():
  """Collects the tests' garbage once, then exempts what is left from
  garbage collection. pytest collects five more times while it shuts
  down, each pass over every live object (the compiled programs and
  traces JAX keeps: seconds in an xdist worker after the whole suite),
  and after a worker's last report execnet waits 5 s before it interrupts
  the worker's main thread: a KeyboardInterrupt traceback in JAX's gc
  callback at the end of half the runs."""
  gc.collect()
  gc.freeze()
