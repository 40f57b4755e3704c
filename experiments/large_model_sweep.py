"""Issue 6's from-scratch large model, configs/vgg_fer.py, on two seeds.

  python -m fer_jax.sweep --config=experiments/large_model_sweep.py \
      --workdir=runs/large_model \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz
  python -m fer_jax.report --workdirs runs/large_model \
      --out reports/large_model --ten_crop

Two seeds (initialisation, data order, augmentation and dropout), as issue
6 asks of a config that reaches its target. The best becomes the teacher of
the small model (experiments/accuracy_ablation_sweep.py's distillation
command).
"""

import os

from fer_jax import sweeps

VGG_FER = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                       'vgg_fer.py')


def get_config():
  return sweeps.load_config(VGG_FER)


def sweep(add):
  for seed in (0, 1):
    add(seed=seed)
