"""FER+'s four training modes (Barsoum et al. 2016) on resnet_small: 4 runs.

  python -m fer_jax.sweep --config=experiments/ferplus_modes_sweep.py \
      --workdir=runs/ferplus_modes \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz \
      --config.data.ferplus_path=../shared/datasets/ferplus/fer2013new.csv

`majority`, `probability`, `crossentropy` and `multi_target` targets for
the train split (README, Data); validation, selection and test use the
majority labels in every mode, so the runs compare on the same 3,199 /
3,153 faces. The rest is configs/resnet_small.py, checkpoints selected on
PublicTest accuracy, the FER+ paper's metric.
"""

import os

from fer_jax import sweeps
from fer_jax.data import ferplus

RESNET_SMALL = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                            'resnet_small.py')


def get_config():
  config = sweeps.load_config(RESNET_SMALL)
  config.train.selection_metric = 'val/accuracy'
  return config


def sweep(add):
  for mode in ferplus.LABEL_MODES:
    add(**{'data.label_mode': mode})
