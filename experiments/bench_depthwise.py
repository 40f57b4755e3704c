"""One depthwise 3x3 layer: XLA's grouped convolution vs fer_jax's shifted
products (fer_jax/models/depthwise.py), and PyTorch's, on this backend.

  python experiments/bench_depthwise.py
  python experiments/bench_depthwise.py --shapes=64x48x48x96 --notorch

For each NHWC input shape, the median milliseconds of the forward pass and of
forward + backward (gradients of the input and the kernel) of a stride-1
'SAME' layer without bias, as MobileNetV2's; prints one Markdown table and
the largest difference between the two JAX results.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from fer_jax.models import depthwise

import timing  # experiments/timing.py, beside this script.

flags.DEFINE_list('shapes', ['64x48x48x96', '64x24x24x192', '64x12x12x384'],
                  'NHWC input shapes (mobilenetv2_small at batch 64 has the '
                  'first two).')
flags.DEFINE_integer('repeats', 10, 'Timed calls per figure (median).')
flags.DEFINE_bool('torch', True, 'Also time torch.nn.Conv2d(groups=C) on '
                  'the CPU (--notorch: skip it).')
FLAGS = flags.FLAGS


def _jax_ms(shape, shifted: bool) -> tuple[float, float, np.ndarray]:
  conv = nn.Conv(shape[-1], (3, 3), feature_group_count=shape[-1],
                 use_bias=False,
                 conv_general_dilated=(depthwise.conv_general_dilated
                                       if shifted else None))
  x = jax.random.normal(jax.random.key(0), shape)
  variables = conv.init(jax.random.key(1), x)
  forward = jax.jit(conv.apply)
  backward = jax.jit(jax.grad(
      lambda v, x: jnp.sum(conv.apply(v, x) ** 2), argnums=(0, 1)))
  for fn in (forward, backward):
    jax.block_until_ready(fn(variables, x))  # Compiled, untimed.
  forward_ms = timing.median_ms(
      lambda: jax.block_until_ready(forward(variables, x)), FLAGS.repeats)
  both_ms = timing.median_ms(
      lambda: jax.block_until_ready(backward(variables, x)), FLAGS.repeats)
  return forward_ms, both_ms, np.asarray(forward(variables, x))


def _torch_ms(shape) -> tuple[float, float]:
  import torch  # pylint: disable=import-outside-toplevel
  batch, height, width, channels = shape
  conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels,
                         bias=False)
  x = torch.randn(batch, channels, height, width, requires_grad=True)

  def both():
    conv.zero_grad()
    x.grad = None
    (conv(x) ** 2).sum().backward()

  with torch.no_grad():
    forward = functools.partial(conv, x)
    forward()
    forward_ms = timing.median_ms(forward, FLAGS.repeats)
  both()
  return forward_ms, timing.median_ms(both, FLAGS.repeats)


def _torch_version() -> str:
  import torch  # pylint: disable=import-outside-toplevel
  return f'{torch.__version__} on the CPU, {torch.get_num_threads()} threads'


def main(argv):
  del argv
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'jax {jax.__version__}; ms, median of {FLAGS.repeats}'
        + (f'; torch {_torch_version()}' if FLAGS.torch else ''))
  print('| input NHWC | grouped conv fwd | shifted fwd | grouped fwd+bwd '
        '| shifted fwd+bwd | max abs difference |'
        + (' torch fwd | torch fwd+bwd |' if FLAGS.torch else ''))
  print('|---|---|---|---|---|---|' + ('---|---|' if FLAGS.torch else ''))
  for text in FLAGS.shapes:
    shape = tuple(int(n) for n in text.split('x'))
    grouped_fwd, grouped_both, grouped_out = _jax_ms(shape, shifted=False)
    shifted_fwd, shifted_both, shifted_out = _jax_ms(shape, shifted=True)
    difference = np.abs(grouped_out - shifted_out).max()
    row = (f'| {text} | {grouped_fwd:,.1f} | {shifted_fwd:,.1f} | '
           f'{grouped_both:,.1f} | {shifted_both:,.1f} | {difference:.1e} |')
    if FLAGS.torch:
      row += ' {:,.1f} | {:,.1f} |'.format(*_torch_ms(shape))
    print(row)


if __name__ == '__main__':
  app.run(main)
