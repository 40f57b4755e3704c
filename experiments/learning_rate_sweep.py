"""A learning-rate grid, 1e-4 to 1e-2 (5 runs), on configs/resnet_small.py.

  python -m fer_jax.sweep --config=experiments/learning_rate_sweep.py \
      --workdir=runs/learning_rate_sweep \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Its optimizer is Adam; for SGD add `--config.train.optimizer=sgd`.
"""

import os

from fer_jax import sweeps

RESNET_SMALL = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                            'resnet_small.py')


def get_config():
  return sweeps.load_config(RESNET_SMALL)


def sweep(add):
  for learning_rate in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
    add(**{'train.learning_rate': learning_rate})
