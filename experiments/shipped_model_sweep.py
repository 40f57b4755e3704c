"""The shipped small model's recipe, one command: resnet_small_v2 trained
as fer_jax/pretrained was, 8 epochs then four 12-epoch warm restarts.

  python -m fer_jax.sweep --config=experiments/shipped_model_sweep.py \
      --workdir=runs/shipped_model \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Five runs, each starting from the best checkpoint of the one before
(`sweeps.Earlier`): 8 epochs of cosine from scratch, then four restarts of
12 epochs (a warm-up epoch to 1e-3, then cosine) on new seeds, so that
each sees a new stream of batches, the last two with random erasing. All
keep an EMA of the weights and select on PublicTest macro-F1 at every
epoch, without early stopping. 56 epochs: 4.5 to 5 hours on a 2-core
CPU (experiments/RESULTS.md, "The shipped model: resnet_small_v2"; the
commands there, run one by one, trained fer_jax/pretrained: 67.87%
PublicTest, 68.65% PrivateTest, 70.60% with ten crops). The last run is
the model to release (README, Emotions on photos); <workdir>/summary.md
tabulates all five stages.
"""

import os

from fer_jax import sweeps

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        os.pardir, 'configs')
# (seed, random erasing probability) of each restart.
RESTARTS = ((1, 0.0), (2, 0.0), (3, 0.5), (4, 0.5))


def get_config():
  config = sweeps.load_config(os.path.join(_CONFIGS, 'resnet_small_v2.py'))
  config.train.update(schedule='cosine', ema_decay=0.998,
                      early_stopping_patience=0)
  return config


def sweep(add):
  previous = '1_cosine8'
  add(name=previous, **{'train.epochs': 8})
  for stage, (seed, erasing) in enumerate(RESTARTS, 2):
    name = f'{stage}_restart_seed{seed}' + ('_erasing' if erasing else '')
    add(name=name, **{'model.init_from': sweeps.Earlier(previous),
                      'train.epochs': 12, 'train.learning_rate': 1e-3,
                      'train.warmup_epochs': 1.0, 'seed': seed,
                      'data.augment.erasing': erasing})
    previous = name
