"""The lightweight ResNet study: optimizer x learning rate x dropout (12 runs).

  python -m fer_jax.sweep --config=experiments/resnet_small_sweep.py \
      --workdir=runs/resnet_small_sweep \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Adam or SGD with momentum 0.9 (config.train.momentum), learning rate 1e-3 or
1e-2, dropout 0, 0.15 or 0.2; the rest is configs/resnet_small.py's recipe.
A reduced version for a CPU: add `--config.data.max_per_class=100
--config.train.epochs=2 --config.train.batch_size=32`.
"""

import itertools
import os

from fer_jax import sweeps

RESNET_SMALL = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                            'resnet_small.py')


def get_config():
  return sweeps.load_config(RESNET_SMALL)


def sweep(add):
  for optimizer, learning_rate, dropout in itertools.product(
      ('adam', 'sgd'), (1e-3, 1e-2), (0.0, 0.15, 0.2)):
    add(**{'train.optimizer': optimizer,
           'train.learning_rate': learning_rate, 'model.dropout': dropout})
