"""The MobileNetV2 study: dropout x weight decay x optimizer (12 runs).

  python -m fer_jax.sweep --config=experiments/mobilenetv2_small_sweep.py \
      --workdir=runs/mobilenetv2_small_sweep \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Dropout 0, 0.15 or 0.2 (the ResNet study's grid), weight decay 0 or 1e-4,
Adam or SGD with momentum 0.9; the rest is configs/mobilenetv2_small.py's
recipe. A reduced version for a CPU: add `--config.data.max_per_class=100
--config.train.epochs=2 --config.train.batch_size=32`.
"""

import itertools
import os

from fer_jax import sweeps

MOBILENETV2_SMALL = os.path.join(os.path.dirname(__file__), os.pardir,
                                 'configs', 'mobilenetv2_small.py')


def get_config():
  return sweeps.load_config(MOBILENETV2_SMALL)


def sweep(add):
  for dropout, weight_decay, optimizer in itertools.product(
      (0.0, 0.15, 0.2), (0.0, 1e-4), ('adam', 'sgd')):
    add(**{'model.dropout': dropout, 'train.weight_decay': weight_decay,
           'train.optimizer': optimizer})
