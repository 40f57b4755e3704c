"""Parameters and FLOPs of every model at its config's input, as a table.

  python experiments/model_zoo_table.py [--num_classes=7]

Each model is built from configs/<name>.py (head, input size and channels
as trained) for the FER classes, and so is each of `VARIANTS`, a config of
a zoo model with other settings; FLOPs are XLA's cost analysis of the
forward pass on one image as lowered for the CPU (a multiply-add counts as
two; `inference.forward_mflops`), the figure `fer_jax.main` prints at
start. Nothing is initialised or trained: shapes only.
"""

import os

import numpy as np
from absl import app, flags

from fer_jax import inference, models, rundir, sweeps
from fer_jax.data import preprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_integer('num_classes', 7, 'Classes of the classifier.')
VARIANTS = ('resnet_small_v2',)


def main(argv):
  del argv
  print('| model | input | head | params | MFLOPs per image |')
  print('|---|---|---|---|---|')
  for config_name in sorted(models.MODELS) + list(VARIANTS):
    config = sweeps.load_config(os.path.join(ROOT, 'configs',
                                             f'{config_name}.py'))
    settings = rundir.as_json(config)['model']
    name = settings.pop('name')
    model = models.create(name, flags.FLAGS.num_classes, **settings)
    size, channels = config.data.image_size, config.data.channels
    # The input normalisation does not change the FLOPs: a fixed one.
    spec = preprocess.InputSpec(size, channels, (127.5,) * channels,
                                (127.5,) * channels)
    variables = models.variable_shapes(model, (1, size, size, channels))
    mflops = inference.forward_mflops(inference.make_logits_fn(model, spec),
                                      variables, np.zeros((1, 48, 48),
                                                          np.uint8))
    label = name if name == config_name else f'{name} ({config_name}.py)'
    print(f'| {label} | {size}x{size}x{channels} | '
          f'{settings.get("head", "own")} | '
          f'{models.count_params(variables["params"]):,} | {mflops:,.1f} |',
          flush=True)


if __name__ == '__main__':
  app.run(main)
