"""Number of classes x images per class (9 runs), configs/resnet_small.py.

  python -m fer_jax.sweep --config=experiments/classes_sweep.py \
      --workdir=runs/classes_sweep \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

All 7 classes, 5 (without disgust and neutral) or 3; at most 500 or 2,000
images per class in every split (data.max_per_class), or all of them (0).
"""

import itertools
import os

from fer_jax import sweeps

RESNET_SMALL = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                            'resnet_small.py')

CLASSES = ('angry,disgust,fear,happy,sad,surprise,neutral',
           'angry,fear,happy,sad,surprise', 'happy,sad,neutral')


def get_config():
  return sweeps.load_config(RESNET_SMALL)


def sweep(add):
  for classes, max_per_class in itertools.product(CLASSES, (500, 2000, 0)):
    add(**{'data.classes': classes, 'data.max_per_class': max_per_class})
