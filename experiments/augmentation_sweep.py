"""Augmentation on / off (geometric, photometric) x class weights (8 runs).

  python -m fer_jax.sweep --config=experiments/augmentation_sweep.py \
      --workdir=runs/augmentation_sweep \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Geometric: rotation +-10 degrees, shift and zoom +-10%, horizontal flips.
Photometric: brightness +-10% of 255, contrast +-20%. Class weights 'none'
or 'balanced' (n / (classes * count)). The rest is configs/resnet_small.py.
Runs are named e.g. `geometric=on,photometric=off,class_weights=balanced`.
"""

import itertools
import os

from fer_jax import sweeps

RESNET_SMALL = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                            'resnet_small.py')

GEOMETRIC = {
    'on': {'data.augment.rotation': 10.0, 'data.augment.translation': 0.1,
           'data.augment.zoom': 0.1, 'data.augment.hflip': True},
    'off': {'data.augment.rotation': 0.0, 'data.augment.translation': 0.0,
            'data.augment.zoom': 0.0, 'data.augment.hflip': False},
}
PHOTOMETRIC = {
    'on': {'data.augment.brightness': 0.1, 'data.augment.contrast': 0.2},
    'off': {'data.augment.brightness': 0.0, 'data.augment.contrast': 0.0},
}


def get_config():
  return sweeps.load_config(RESNET_SMALL)


def sweep(add):
  for geometric, photometric, class_weights in itertools.product(
      GEOMETRIC, PHOTOMETRIC, ('none', 'balanced')):
    add(name=f'geometric={geometric},photometric={photometric},'
             f'class_weights={class_weights}',
        **GEOMETRIC[geometric], **PHOTOMETRIC[photometric],
        **{'train.class_weights': class_weights})
