"""Training throughput: the jitted train step alone and the whole loop
(Grain pipeline + step), per model, beside a PyTorch reference of resnet_small.

  python experiments/bench_train.py --model=resnet_small,mobilenetv2_small
  python experiments/bench_train.py --steps=5 --batch_size=16  # A quick check.

Figures, all in images per second (batch_size * steps / seconds):
  step  the jitted train step alone on one batch already on the device, in
        steady state (after compilation and --warmup steps), synchronised
        once, at the end of the timing;
  loop  the train loop: the Grain pipeline (shuffle, augmentation on the host
        or, with --augment_where=device, in the step, batching) over the
        train split of --data, `pipeline.to_device` prefetching, and the step.
Peak host memory is the process's ru_maxrss. Each model and framework runs
in a child process of its own, so memory peaks and thread pools are its own.

The PyTorch reference is resnet_small as fer_jax/models/resnet_small.py
builds it (same layers, same parameter count), Adam, the same batch size,
and a torch DataLoader over the same uint8 arrays with the torchvision CPU
augmentation of the reference studies (PIL RandomAffine for rotation,
translation and zoom, RandomHorizontalFlip, ColorJitter when the config has
brightness or contrast). It needs the `torch` extra: pip install -e ".[torch]".

Data: the FER2013 train split from --data when the file exists, else 28,709
synthetic uint8 faces. The last line, for scripts:
  resnet_small train_step img/s: jax=<x> torch=<y> ratio=<x/y>
"""

import collections
import dataclasses
import functools
import glob
import importlib.util
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from absl import app, flags

# Neither imports JAX, which the PyTorch child must not load.
from fer_jax import cli
from fer_jax.errors import UserError

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
DEFAULT_DATA = os.path.join(REPO, os.pardir, 'shared', 'datasets', 'fer2013',
                            'fer2013.tar.gz')

flags.DEFINE_list('model', ['resnet_small'], 'Models (comma-separated); '
                  'settings from configs/<model>.py when it exists.')
flags.DEFINE_integer('steps', 100, 'Timed steps per figure.',
                     lower_bound=1)
flags.DEFINE_integer('batch_size', 64, 'Global batch size.',
                     lower_bound=1)
flags.DEFINE_integer('warmup', 3, 'Untimed steps before each timing (after '
                     'compilation).')
flags.DEFINE_boolean('torch', True, 'Also time the PyTorch reference of '
                     'resnet_small (--notorch or --no_torch: skip it).')
flags.DEFINE_string('data', DEFAULT_DATA, 'FER2013 file; synthetic faces '
                    'when it does not exist.')
flags.DEFINE_enum('augment_where', 'host', ['host', 'device'],
                  'config.data.augment.where for the JAX loop.')
flags.DEFINE_enum('compute_dtype', 'float32', ['float32', 'bfloat16'],
                  'config.train.compute_dtype for JAX.')
flags.DEFINE_integer('workers', 0, 'Grain worker processes and DataLoader '
                     'workers; 0: in the main process.')
flags.DEFINE_integer('cpu_devices', 0, 'config.cpu_devices for JAX: CPU '
                     'devices to train data parallel over; 0: one per core, '
                     'as training does. Unused on an accelerator.')
flags.DEFINE_integer('cpu_keep_memory', None, 'config.cpu_keep_memory for '
                     'JAX: steps between give-backs of the kept step '
                     'memory, 0: off; default: the config\'s, as training. '
                     'Unused on an accelerator.')
flags.DEFINE_string('cpu_convolutions', None, 'config.cpu_convolutions '
                    'for JAX: the library that runs convolutions on the CPU '
                    "(eigen or xla); default: the config's, as training. "
                    'Unused on an accelerator.')
flags.DEFINE_integer('profile_ops', 0, 'With N > 0, also trace N JAX steps '
                     'with jax.profiler and print where the step time goes, '
                     'by kind of XLA op (see experiments/BENCHMARKS.md).')
flags.DEFINE_string('profile_dir', None, 'With --profile_ops: keep the '
                    'trace (*.xplane.pb) in this folder (default: a temporary '
                    'one, deleted), e.g. to read a GPU trace elsewhere.')
flags.DEFINE_string('child', None, 'Internal: run one measurement '
                    '(jax:<model> or torch) and print it as JSON.')
FLAGS = flags.FLAGS

SYNTHETIC_SIZE = 28709
RESULT = 'RESULT '


@dataclasses.dataclass
class Result:
  framework: str
  model: str
  device: str
  data: str
  params: int
  step_images_per_s: float
  loop_images_per_s: float
  compile_s: float
  peak_host_mb: float


def _config(model: str):
  from fer_jax.config import default_config  # pylint: disable=import-outside-toplevel
  path = os.path.join(REPO, 'configs', f'{model}.py')
  if os.path.exists(path):
    spec = importlib.util.spec_from_file_location(f'config_{model}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  else:
    config = default_config()
    config.model.name = model
  config.train.batch_size = FLAGS.batch_size
  config.train.compute_dtype = FLAGS.compute_dtype
  config.data.augment.where = FLAGS.augment_where
  config.data.num_workers = FLAGS.workers
  config.cpu_devices = FLAGS.cpu_devices
  if FLAGS.cpu_keep_memory is not None:
    config.cpu_keep_memory = FLAGS.cpu_keep_memory
  if FLAGS.cpu_convolutions is not None:
    config.cpu_convolutions = FLAGS.cpu_convolutions
  return config


def _train_split():
  """(uint8 [N, 48, 48], int32 [N], description): FER2013 train or fake."""
  from fer_jax.data import sources  # pylint: disable=import-outside-toplevel
  if os.path.exists(FLAGS.data):
    train = sources.load(FLAGS.data).splits['train']
    return train.images, train.labels, f'FER2013 train ({len(train)})'
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (SYNTHETIC_SIZE, 48, 48), np.uint8)
  labels = rng.integers(0, 7, SYNTHETIC_SIZE).astype(np.int32)
  return images, labels, f'synthetic ({SYNTHETIC_SIZE})'


def _peak_host_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _print_host_memory(when: str) -> None:
  """The resident memory by kind: anonymous (what the process allocated),
  file (mapped libraries, e.g. CUDA's) and shared (Grain's buffers), beside
  the peak, to stderr (the parent reads stdout). Linux only."""
  try:
    with open('/proc/self/status', encoding='utf-8') as f:
      status = dict(line.split(':', 1) for line in f)
  except OSError:
    return
  mb = {key: int(status[key].split()[0]) / 1024
        for key in ('VmHWM', 'RssAnon', 'RssFile', 'RssShmem') if key in status}
  print(f'host memory {when}: ' + ', '.join(
      f'{key} {value:,.0f} MB' for key, value in mb.items()), file=sys.stderr,
        flush=True)


def _images_per_s(seconds: float) -> float:
  return FLAGS.batch_size * FLAGS.steps / seconds


# ------------------------------------------------------------------- JAX.


def _bench_jax(model_name: str) -> Result:
  # pylint: disable=import-outside-toplevel
  import jax

  from fer_jax import cpu_convolutions, models
  from fer_jax.data import device_augment, pipeline, preprocess, sources
  from fer_jax.train import cpu_devices, cpu_memory, optim, step
  # pylint: enable=import-outside-toplevel

  config = _config(model_name)
  memory_kept = cpu_memory.keep(config.cpu_keep_memory)
  cpu_devices.split(config.cpu_devices, config.train.batch_size)
  images, labels, data = _train_split()
  split = sources.Split(images, labels)
  batch_size = FLAGS.batch_size
  spec = preprocess.input_spec(config.data.normalization,
                               config.data.image_size, config.data.channels,
                               images)
  settings = config.model.to_dict()
  model = models.create(settings.pop('name'), 7,
                        compute_dtype=config.train.compute_dtype, **settings)
  optimizer = optim.create(config.train, len(split) // batch_size)
  batch_sharding, replicated = step.data_parallel(jax.devices())
  _print_host_memory('with the backend started and the data loaded')
  state = step.init_state(model, optimizer, spec, jax.random.key(0),
                          sharding=replicated)
  compiler_options = cpu_convolutions.compiler_options(
      config.cpu_convolutions)
  train_step = jax.jit(
      step.make_train_step(model, optimizer, spec, np.ones(7, np.float32),
                           0.0, device_augment.from_config(
                               config.data.augment)),
      donate_argnums=0, compiler_options=compiler_options)
  rng = jax.random.key(1)

  # The step alone, on one batch already on the device.
  batch = jax.device_put({'image': images[:batch_size],
                          'label': labels[:batch_size]}, batch_sharding)
  start = time.perf_counter()
  state, _ = train_step(state, batch, rng)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - start
  _print_host_memory('after the first step')
  for _ in range(FLAGS.warmup):
    state, _ = train_step(state, batch, rng)
  jax.block_until_ready(state)

  def give_back_as_training_does(step_number, outputs):
    if memory_kept:
      cpu_memory.after_step(step_number, config.cpu_keep_memory, outputs)

  start = time.perf_counter()
  for i in range(1, FLAGS.steps + 1):
    state, _ = train_step(state, batch, rng)
    give_back_as_training_does(i, state)
  jax.block_until_ready(state)
  step_rate = _images_per_s(time.perf_counter() - start)
  if FLAGS.profile_ops:
    def run_steps():
      nonlocal state
      for _ in range(FLAGS.profile_ops):
        state, _ = train_step(state, batch, rng)
      jax.block_until_ready(state)
    _print_op_profile(
        lambda: train_step.lower(state, batch, rng).compile().as_text(),
                      run_steps, FLAGS.profile_ops)

  # The loop: Grain pipeline, prefetch to the device, step.
  host_augment = (config.data.augment
                  if device_augment.where(config.data.augment) == 'host'
                  else None)
  batches = iter(pipeline.train_dataset(
      split, batch_size=batch_size, seed=0, augment_config=host_augment,
      num_workers=config.data.num_workers))
  # Prefetched batches beyond the last timed step: the queue is as full at
  # the timer's end as at its start, as in training, rather than drained
  # (which would time `prefetch_batches` fewer batches of host work).
  feed = pipeline.to_device(
      batches, FLAGS.warmup + FLAGS.steps + config.data.prefetch_batches,
      batch_sharding, config.data.prefetch_batches)
  for _ in range(FLAGS.warmup):
    state, _ = train_step(state, next(feed)[0], rng)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for i in range(1, FLAGS.steps + 1):
    state, _ = train_step(state, next(feed)[0], rng)
    give_back_as_training_does(i, state)
  jax.block_until_ready(state)
  loop_rate = _images_per_s(time.perf_counter() - start)
  _print_host_memory('after the loop')

  device = jax.devices()[0]
  kind = ('' if device.device_kind == device.platform
          else f' {device.device_kind}')
  return Result('jax', model_name,
                f'{device.platform}{kind} x{jax.device_count()}, '
                f'{config.train.compute_dtype}, '
                f'{"convolutions in eigen, " if compiler_options else ""}'
                f'augment on {device_augment.where(config.data.augment)}'
                f'{", step memory kept" if memory_kept else ""}',
                data, models.count_params(state.params), step_rate, loop_rate,
                compile_s, _peak_host_mb())


def _op_kind(hlo: str, name: str) -> str:
  """What the XLA:CPU thunk `name` computes, from the compiled HLO text."""
  line = re.search(r'%' + re.escape(name) + r' = .*', hlo)
  if not line:
    return 'other'
  called = re.search(r'calls=%([\w.-]+)', line.group(0))
  if called:  # A fusion: what its computation computes.
    body = hlo[hlo.index('%' + called.group(1) + ' '):]
    body = body[:body.index('\n}')]
  else:  # An op of its own, as Eigen's convolutions are.
    body = line.group(0)
  window = re.search(r'convolution\(.*?window=\{size=(\d+)x', body)
  if window:
    # XLA computes a kernel gradient as a convolution whose window is the
    # whole activation (batch as the feature axis), e.g. size=48x48.
    kind = ('conv kernel gradient' if int(window.group(1)) > 7
            else 'conv forward / input gradient')
    # The trace times only the dispatch of Eigen's convolutions, not the
    # work (config.cpu_convolutions='eigen'; 'xla' to time them all).
    return kind if called else f'{kind}, Eigen: not timed'
  for op, kind in (('scatter(', 'max-pool gradient (scatter)'),
                   ('reduce-window(', 'max-pool (reduce-window)'),
                   ('iota(', 'iota (argmax indices, random bits)'),
                   ('transpose(', 'transpose (kernel-gradient layout)'),
                   (' dot(', 'dense (dot)')):
    if op in body:
      return kind
  return 'elementwise / reductions (BN, ReLU, Adam, ...)'


# GPU kernels by name (XLA's fusions are named after their root, cuDNN's
# and cuBLAS's after the library), first match wins.
_KERNEL_KINDS = (
    (('xmma', 'cudnn', 'convolve', 'implicitgemm'),
     'convolutions (cuDNN: forward, input and kernel gradients)'),
    (('nvjet', 'cublas', 'gemm'), 'matmuls (cuBLAS)'),
    (('memcpy', 'memset'), 'copies'),
    (('scatter',), 'max-pool gradient (scatter)'),
    (('reduce_window',), 'max-pool (reduce-window)'),
    (('reduce',), 'reductions (BN statistics and their gradients, loss)'),
)


def _kernel_kind(name: str) -> str:
  """What the GPU kernel `name` computes, from its name alone."""
  lowered = name.lower()
  for words, kind in _KERNEL_KINDS:
    if any(word in lowered for word in words):
      return kind
  return 'elementwise fusions (BN, ReLU, Adam, augmentation, ...)'


def _print_op_profile(compiled_text: Callable[[], str], run_steps,
                      steps: int) -> None:
  """Traces `run_steps()` with jax.profiler and prints `op_profile`."""
  import jax  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as temporary_dir:
    trace_dir = FLAGS.profile_dir or temporary_dir
    jax.profiler.start_trace(trace_dir)
    run_steps()
    jax.profiler.stop_trace()
    # Each trace is a new <timestamp> folder: a kept --profile_dir may hold
    # earlier runs' and the other models'.
    path = max(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'),
                         recursive=True), key=os.path.getmtime)
    profile = jax.profiler.ProfileData.from_file(path)
  print('\n'.join(op_profile(profile, compiled_text, steps)),
        file=sys.stderr)


def op_profile(profile, compiled_text: Callable[[], str],
               steps: int) -> list[str]:
  """The time per step by kind of op in a `jax.profiler.ProfileData` of
  `steps` steps: on a GPU its kernels (and how busy it was), on the CPU
  the XLA thunks of `compiled_text()` (the step's compiled HLO; it
  compiles the step again, so only the CPU asks for it), summed over the
  threads that run them."""
  lines = []
  show = lines.append
  gpus = [plane for plane in profile.planes
          if plane.name.startswith('/device:GPU')]
  by_op = collections.Counter()
  if gpus:
    kernels = [event for plane in gpus for line in plane.lines
               for event in line.events]
    for kernel in kernels:
      by_op[kernel.name] += kernel.duration_ns / 1e6 / steps
    span = (max(k.start_ns + k.duration_ns for k in kernels)
            - min(k.start_ns for k in kernels)) / 1e6 / steps
    show(f'GPU busy {sum(by_op.values()):,.2f} ms of each {span:,.2f} ms '
         f'step, {len(kernels) // steps} kernels a step')
    kind_of = _kernel_kind
  else:
    for plane in profile.planes:
      for line in plane.lines:
        for event in line.events:
          if not any(word in event.name
                     for word in ('Execute', 'Await', '$')):
            by_op[event.name] += event.duration_ns / 1e6 / steps
    kind_of = functools.partial(_op_kind, compiled_text())
  by_kind = collections.Counter()
  for name, ms in by_op.items():
    by_kind[kind_of(name)] += ms
  total = sum(by_kind.values())
  show(f'Op time per step{"" if gpus else ", summed over threads"}: '
       f'{total:,.2f} ms')
  for kind, ms in by_kind.most_common():
    show(f'  {ms:8,.2f} ms {100 * ms / total:5.1f}%  {kind}')
  show('  Largest ops:')
  for name, ms in by_op.most_common(8):
    show(f'  {ms:8,.2f} ms  {name[:100]}: {kind_of(name)}')
  return lines


# ----------------------------------------------------------------- PyTorch.


def _bench_torch() -> Result:
  # pylint: disable=import-outside-toplevel
  import PIL.Image
  import torch
  import torchvision.transforms as T
  from torch import nn
  # pylint: enable=import-outside-toplevel

  config = _config('resnet_small')
  m = config.model

  class ResidualBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus a (projected) skip, then ReLU."""

    def __init__(self, in_features: int, features: int):
      super().__init__()
      self.body = nn.Sequential(
          nn.Conv2d(in_features, features, 3, padding=1, bias=False),
          nn.BatchNorm2d(features), nn.ReLU(),
          nn.Conv2d(features, features, 3, padding=1, bias=False),
          nn.BatchNorm2d(features))
      self.skip = nn.Identity() if in_features == features else (
          nn.Sequential(nn.Conv2d(in_features, features, 1, bias=False),
                        nn.BatchNorm2d(features)))

    def forward(self, x):
      return torch.relu(self.body(x) + self.skip(x))

  class ResNetSmall(nn.Module):
    """fer_jax.models.resnet_small.ResNetSmall in torch (NCHW)."""

    def __init__(self, num_classes: int):
      super().__init__()
      # BatchNorm momentum 0.1 here is Flax's 0.9; both use epsilon 1e-5.
      layers = [nn.Conv2d(1, m.stem_features, 3, padding=1),
                nn.BatchNorm2d(m.stem_features), nn.ReLU()]
      features, size = m.stem_features, config.data.image_size
      for block_features in m.block_features:
        layers += [ResidualBlock(features, block_features), nn.MaxPool2d(2),
                   nn.Dropout(m.dropout)]
        features, size = block_features, size // 2
      if m.pooling == 'gap':
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
      else:
        layers += [nn.Flatten()]
        features *= size * size
      if m.hidden_units:
        layers += [nn.Linear(features, m.hidden_units), nn.ReLU(),
                   nn.Dropout(m.dropout)]
        features = m.hidden_units
      layers.append(nn.Linear(features, num_classes))
      self.layers = nn.Sequential(*layers)

    def forward(self, x):
      return self.layers(x)

  images, labels, data = _train_split()
  batch_size = FLAGS.batch_size
  torch.manual_seed(0)
  # On a GPU machine the model trains there, fed by the DataLoader's CPU
  # augmentation, as in the reference studies.
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  model = ResNetSmall(7).to(device)
  model.train()
  optimizer = torch.optim.Adam(model.parameters(),
                               lr=config.train.learning_rate)
  loss_fn = nn.CrossEntropyLoss()

  def finish_queued_work():
    """Waits for the GPU, as JAX's timers do (block_until_ready)."""
    if device.type == 'cuda':
      torch.cuda.synchronize(device)

  def train_step(x, y):
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss

  # The step alone, on one batch of normalised float32 tensors.
  x = torch.from_numpy(images[:batch_size, None].astype(np.float32))
  x = (x - 127.5) / 127.5
  y = torch.from_numpy(labels[:batch_size].astype(np.int64))
  x, y = x.to(device), y.to(device)  # Already on the device, as for JAX.
  start = time.perf_counter()
  train_step(x, y)
  finish_queued_work()
  compile_s = time.perf_counter() - start  # The first step: no compiler.
  for _ in range(FLAGS.warmup):
    train_step(x, y)
  finish_queued_work()
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    train_step(x, y)
  finish_queued_work()
  step_rate = _images_per_s(time.perf_counter() - start)

  # The loop: torchvision-style CPU augmentation in a DataLoader.
  a = config.data.augment
  transforms = [T.RandomAffine(degrees=a.rotation,
                               translate=(a.translation, a.translation),
                               scale=(1 - a.zoom, 1 + a.zoom))]
  if a.hflip:
    transforms.append(T.RandomHorizontalFlip())
  if a.brightness or a.contrast:
    transforms.append(T.ColorJitter(brightness=a.brightness,
                                    contrast=a.contrast))
  transforms += [T.ToTensor(), T.Normalize((0.5,), (0.5,))]
  transform = T.Compose(transforms)

  class Faces(torch.utils.data.Dataset):

    def __len__(self):
      return len(labels)

    def __getitem__(self, index):
      return (transform(PIL.Image.fromarray(images[index])),
              int(labels[index]))

  loader = torch.utils.data.DataLoader(
      Faces(), batch_size=batch_size, shuffle=True, drop_last=True,
      num_workers=FLAGS.workers, persistent_workers=FLAGS.workers > 0,
      pin_memory=device.type == 'cuda')

  def forever():
    while True:
      yield from loader

  feed = forever()
  for _ in range(FLAGS.warmup):
    train_step(*next(feed))
  finish_queued_work()
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    train_step(*next(feed))
  finish_queued_work()
  loop_rate = _images_per_s(time.perf_counter() - start)

  where = (f'cuda {torch.cuda.get_device_name(device)}'
           if device.type == 'cuda'
           else f'cpu, {torch.get_num_threads()} threads')
  return Result('torch', 'resnet_small', f'{where}, torch {torch.__version__}',
                data, sum(p.numel() for p in model.parameters()), step_rate,
                loop_rate, compile_s, _peak_host_mb())


# ------------------------------------------------------------------ Driver.


def _run_child(which: str) -> Result:
  # The child gets this command's flags (all of them: none is forgotten).
  done = subprocess.run(
      [sys.executable, os.path.abspath(__file__), *sys.argv[1:],
       f'--child={which}'], stdout=subprocess.PIPE, text=True, check=False)
  lines = [l for l in done.stdout.splitlines() if l.startswith(RESULT)]
  if done.returncode or not lines:
    raise UserError(f'The {which} measurement failed (exit '
                    f'{done.returncode}); its error is above.')
  return Result(**json.loads(lines[-1][len(RESULT):]))


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _commit() -> str:
  done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                        capture_output=True, text=True, check=False)
  dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=REPO,
                         capture_output=True, text=True, check=False)
  return done.stdout.strip() + ('+changes' if dirty.stdout.strip() else '')


def _print_header(data: str) -> None:
  print(f'\ncommand: python experiments/bench_train.py '
        f'{" ".join(sys.argv[1:])}')
  # Both frameworks' children inherit a preloaded malloc (e.g. tcmalloc),
  # which changes the CPU figures (BENCHMARKS.md).
  preloaded = ' '.join(
      os.path.basename(path)
      for path in os.environ.get('LD_PRELOAD', '').replace(':', ' ').split())
  print(f'commit {_commit()}; host {_cpu_name()}, {os.cpu_count()} CPUs; '
        f'{"LD_PRELOAD " + preloaded + "; " if preloaded else ""}'
        f'batch {FLAGS.batch_size}, {FLAGS.steps} timed steps after '
        f'{FLAGS.warmup}; data {data}')
  print('| framework | model | params | device | step img/s | loop img/s '
        '| first step s | peak host MB |')
  print('|---|---|---|---|---|---|---|---|', flush=True)


def _print_row(r: Result) -> None:
  print(f'| {r.framework} | {r.model} | {r.params:,} | {r.device} | '
        f'{r.step_images_per_s:,.0f} | {r.loop_images_per_s:,.0f} | '
        f'{r.compile_s:.1f} | {r.peak_host_mb:,.0f} |', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with cli.exits_on_user_errors():
    if FLAGS.child:
      result = (_bench_torch() if FLAGS.child == 'torch'
                else _bench_jax(FLAGS.child.split(':', 1)[1]))
      print(RESULT + json.dumps(dataclasses.asdict(result)), flush=True)
    else:
      _compare()


def _compare() -> None:
  """Runs each measurement in its own process and prints the table."""
  children = [f'jax:{model}' for model in FLAGS.model]
  torch_note = ''
  if FLAGS.torch and 'resnet_small' in FLAGS.model:
    if importlib.util.find_spec('torch') is None:
      torch_note = ('torch is not installed (pip install -e ".[torch]"); '
                    'no reference.')
    else:
      # Right after JAX's resnet_small, so that the ratio comes before the
      # other models.
      children.insert(children.index('jax:resnet_small') + 1, 'torch')
  # Each row as soon as it is measured: a caller's timeout (the device
  # session's) keeps the rows before it.
  results = []
  for child in children:
    results.append(_run_child(child))
    if len(results) == 1:
      _print_header(results[0].data)
    _print_row(results[-1])
  if torch_note:
    print(torch_note)
  rates = {r.framework: r.step_images_per_s for r in results
           if r.model == 'resnet_small'}
  if 'jax' in rates:
    if 'torch' in rates:
      print(f'resnet_small train_step img/s: jax={rates["jax"]:.1f} '
            f'torch={rates["torch"]:.1f} '
            f'ratio={rates["jax"] / rates["torch"]:.2f}')
    else:
      print(f'resnet_small train_step img/s: jax={rates["jax"]:.1f} '
            'torch=n/a ratio=n/a')


if __name__ == '__main__':
  # absl spells a false boolean --notorch; accept --no_torch too.
  sys.argv = ['--notorch' if arg == '--no_torch' else arg for arg in sys.argv]
  app.run(main)
