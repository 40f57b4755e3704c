"""Each convolution of a model's train step, timed alone: forward, input
gradient (dX) and kernel gradient (dW), in JAX with each CPU convolution
library (config.cpu_convolutions) and in PyTorch.

  LD_PRELOAD=libtcmalloc_minimal.so.4 python experiments/bench_convolutions.py

bench_train.py says how fast the whole step is; this says which
convolutions make the difference. XLA:CPU's profile cannot: Eigen's
convolutions run in its own thread pool, outside the traced thunks.

The convolutions are those of `--model`'s forward pass (from its config,
at its image size), found in its jaxpr (depthwise ones are elementwise
products there, fer_jax/models/depthwise.py: bench_depthwise.py times them); the PyTorch ones are torch.nn.Conv2d of the same
shapes. (The first convolution's dX, of the images, is not part of a
train step.) Each framework and library runs in a child process of its
own, with its own thread pool. Milliseconds, median of --repeats after two
untimed calls, at --batch_size (the whole batch on one device).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # experiments/timing.py, beside this script.
# Neither imports JAX, which the PyTorch child must not load.
from fer_jax import cli  # pylint: disable=wrong-import-position
from fer_jax.errors import UserError  # pylint: disable=wrong-import-position

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
PARTS = ('forward', 'dX', 'dW')

flags.DEFINE_string('model', 'resnet_small', 'Model; settings from '
                    'configs/<model>.py.')
flags.DEFINE_integer('batch_size', 64, 'Images per convolution.',
                     lower_bound=1)
flags.DEFINE_integer('repeats', 8, 'Timed calls per figure.', lower_bound=1)
flags.DEFINE_string('child', None, 'Internal: time one library (eigen, xla '
                    'or torch) over the JSON list of convolutions given.')
FLAGS = flags.FLAGS


def _convolutions(model_name: str) -> list[dict]:
  """The distinct 2D convolutions of the model's forward pass, as
  {'input': NHWC shape, 'kernel': HWIO shape, 'strides', 'padding',
  'groups'}."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp

  from fer_jax import models, sweeps
  # pylint: enable=import-outside-toplevel
  config_file = os.path.join(REPO, 'configs', f'{model_name}.py')
  if not os.path.exists(config_file):
    raise UserError(f'--model={model_name}: no configs/{model_name}.py; '
                    f'one of {", ".join(sorted(models.MODELS))}.')
  config = sweeps.load_config(config_file)
  settings = config.model.to_dict()
  model = models.create(settings.pop('name'), 7, **settings)
  images = jnp.zeros((FLAGS.batch_size, config.data.image_size,
                      config.data.image_size, config.data.channels))
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(
      variables, images)
  found = []
  for equation in _equations(jaxpr.jaxpr):
    if equation.primitive.name != 'conv_general_dilated':
      continue
    lhs, rhs = (v.aval.shape for v in equation.invars)
    params = equation.params
    numbers = params['dimension_numbers']
    assert numbers.lhs_spec == (0, 3, 1, 2), numbers  # NHWC, as Flax's.
    assert numbers.rhs_spec == (3, 2, 0, 1), numbers  # HWIO.
    assert set(params['lhs_dilation'] + params['rhs_dilation']) == {1}
    convolution = {'input': lhs, 'kernel': rhs,
                   'strides': params['window_strides'],
                   'padding': params['padding'],
                   'groups': params['feature_group_count']}
    if convolution not in found:
      found.append(convolution)
  if not found:
    raise UserError(f'--model={model_name}: no convolution in its forward '
                    'pass.')
  return found


def _equations(jaxpr):
  """The equations of `jaxpr` and of the jaxprs nested in them (jit,
  custom_vjp, ...)."""
  for equation in jaxpr.eqns:
    yield equation
    for value in equation.params.values():
      for inner in value if isinstance(value, (tuple, list)) else [value]:
        inner = getattr(inner, 'jaxpr', inner)  # A ClosedJaxpr's Jaxpr.
        if hasattr(inner, 'eqns'):
          yield from _equations(inner)


def _name(convolution: dict) -> str:
  height, width, cin, cout = convolution['kernel']
  groups = convolution['groups']
  return (f'{cin * groups}->{cout} {height}x{width} at '
          f'{convolution["input"][1]}x{convolution["input"][2]}'
          + (f', stride {convolution["strides"][0]}'
             if max(convolution['strides']) > 1 else '')
          + (f', {groups} groups' if groups > 1 else ''))


def _time_jax(library: str, convolutions: list[dict]) -> list[list[float]]:
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp

  from fer_jax import cpu_convolutions
  # pylint: enable=import-outside-toplevel
  options = cpu_convolutions.compiler_options(library)
  times = []
  for convolution in convolutions:
    def conv(x, w, convolution=convolution):
      return jax.lax.conv_general_dilated(
          x, w, convolution['strides'], convolution['padding'],
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          feature_group_count=convolution['groups'])

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=convolution['input']), jnp.float32)
    w = jnp.asarray(rng.normal(size=convolution['kernel']), jnp.float32)
    dy = jnp.ones(jax.eval_shape(conv, x, w).shape)
    forward = jax.jit(conv, compiler_options=options)
    gradients = [jax.jit(lambda x, w, dy, i=i: jax.vjp(conv, x, w)[1](dy)[i],
                         compiler_options=options) for i in (0, 1)]  # dX, dW.
    calls = [lambda: forward(x, w).block_until_ready()] + [
        lambda f=f: f(x, w, dy).block_until_ready() for f in gradients]
    times.append([_median_ms(call) for call in calls])
  return times


def _time_torch(convolutions: list[dict]) -> list[list[float]]:
  # Torch's own thread count, as bench_train.py's reference runs with.
  import torch  # pylint: disable=import-outside-toplevel
  times = []
  for convolution in convolutions:
    batch, height, width, _ = convolution['input']
    kh, kw, cin, cout = convolution['kernel']
    groups = convolution['groups']
    (top, bottom), (left, right) = convolution['padding']
    assert top == bottom and left == right, convolution['padding']
    layer = torch.nn.Conv2d(cin * groups, cout, (kh, kw),
                            stride=convolution['strides'],
                            padding=(top, left), groups=groups, bias=False)
    x = torch.randn(batch, cin * groups, height, width, requires_grad=True)
    y = layer(x)  # The graph that each gradient's call goes back through.
    dy = torch.ones_like(y)

    def forward():
      with torch.no_grad():
        layer(x)

    times.append([_median_ms(forward)] + [
        _median_ms(lambda wrt=wrt: torch.autograd.grad(
            y, wrt, dy, retain_graph=True)) for wrt in (x, layer.weight)])
  return times


def _median_ms(call) -> float:
  call()
  call()
  return timing.median_ms(call, FLAGS.repeats)


def _child(library: str) -> None:
  convolutions = json.loads(sys.stdin.read())
  times = (_time_torch(convolutions) if library == 'torch'
           else _time_jax(library, convolutions))
  print(json.dumps(times))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with cli.exits_on_user_errors():
    if FLAGS.child:
      _child(FLAGS.child)
    else:
      _compare()


def _compare() -> None:
  """Times each library in a process of its own; prints the table."""
  convolutions = _convolutions(FLAGS.model)
  libraries = ['eigen', 'xla']
  if importlib.util.find_spec('torch'):
    libraries.append('torch')
  else:
    print('PyTorch is not installed (pip install -e ".[torch]"): JAX only.')
  results = {}
  for library in libraries:
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f'--child={library}',
         f'--repeats={FLAGS.repeats}'],
        input=json.dumps(convolutions), capture_output=True, text=True,
        check=False)
    if child.returncode:
      raise UserError(f'The {library} measurement failed (exit '
                      f'{child.returncode}):\n{child.stderr[-2000:]}')
    results[library] = np.array(json.loads(child.stdout))
  columns = [(library, part) for part in PARTS for library in results]
  print(f'{FLAGS.model}, batch {FLAGS.batch_size}, milliseconds (JAX: '
        'eigen / xla = config.cpu_convolutions):')
  print('| convolution | ' + ' | '.join(
      f'{part} {library}' for library, part in columns) + ' |')
  print('|---' * (len(columns) + 1) + '|')
  rows = [(_name(c), i) for i, c in enumerate(convolutions)]
  for name, i in rows:
    print(f'| {name} | ' + ' | '.join(
        f'{results[library][i, PARTS.index(part)]:.1f}'
        for library, part in columns) + ' |')
  print('| all | ' + ' | '.join(
      f'{results[library][:, PARTS.index(part)].sum():.1f}'
      for library, part in columns) + ' |')
  for library, times in results.items():
    print(f'{library}: forward + dX + dW = {times.sum():.1f} ms')


if __name__ == '__main__':
  app.run(main)
