"""The accuracy ablation of issue 6: each technique alone on one long recipe.

  python -m fer_jax.sweep --config=experiments/accuracy_ablation_sweep.py \
      --workdir=runs/accuracy_ablation \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz
  python -m fer_jax.report --workdirs runs/accuracy_ablation \
      --out reports/accuracy_ablation --ten_crop

The base is configs/resnet_small.py (417k parameters) on a long schedule:
SGD with Nesterov momentum 0.9, learning rate 0.05 with one warm-up epoch
and cosine decay over 100 epochs, weight decay 5e-4, no early stopping
(the cosine schedule must run out), checkpoints selected on PublicTest
accuracy. Each run adds one technique to it (`base` adds none); `adamw`
and `plateau` change the optimizer or the schedule instead,
`resnet_small_v2` the architecture (configs/resnet_small_v2.py's model:
13 convolutions instead of 5, 481k parameters), and `all` stacks every
technique added. The values are the usual ones of the papers that
introduced them, not tuned here: tuning belongs on PublicTest, one knob at
a time, from this table. Distillation needs a trained teacher, so it is a
second command over the same base (e.g. from the best large model,
experiments/large_model_sweep.py's):

  python -m fer_jax.main --config=experiments/accuracy_ablation_sweep.py \
      --workdir=runs/accuracy_ablation/distill \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz \
      --config.train.distill_from=runs/large_model/seed=0

Both seeds teach as an ensemble with
`--config.train.distill_from=runs/large_model/seed=0,runs/large_model/seed=1`.
Pick the teacher on the student's selection metric: a more accurate teacher
with a weaker rare class passes that weakness on (experiments/RESULTS.md,
"distilled from vgg_fer").
"""

import os

from fer_jax import sweeps

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, 'configs')
RESNET_SMALL = os.path.join(CONFIGS, 'resnet_small.py')


def get_config():
  config = sweeps.load_config(RESNET_SMALL)
  config.train.update(
      epochs=100, optimizer='sgd', nesterov=True, momentum=0.9,
      learning_rate=0.05, schedule='cosine', warmup_epochs=1.0,
      weight_decay=5e-4, early_stopping_patience=0,
      selection_metric='val/accuracy')
  config.model.blocks_per_stage = 1  # The model's default; a run varies it.
  return config


def _model_changes(config_file: str) -> dict:
  """The model settings of configs/`config_file` other than the base's."""
  base = get_config().model
  model = sweeps.load_config(os.path.join(CONFIGS, config_file)).model
  return {f'model.{key}': value for key, value in model.items()
          if value != base[key]}


ADDITIONS = {
    'base': {},
    'label_smoothing': {'train.label_smoothing': 0.1},
    'erasing': {'data.augment.erasing': 0.5},
    'mixup': {'train.mixup_alpha': 0.2},
    'cutmix': {'train.cutmix_alpha': 1.0},
    'ema': {'train.ema_decay': 0.999},
    'adamw': {'train.optimizer': 'adamw', 'train.learning_rate': 1e-3,
              'train.weight_decay': 0.05},
    'plateau': {'train.schedule': 'plateau', 'train.plateau_patience': 5},
    'resnet_small_v2': _model_changes('resnet_small_v2.py'),
}
ADDITIONS['all'] = {
    key: value for name in ('label_smoothing', 'erasing', 'mixup', 'cutmix',
                            'ema')
    for key, value in ADDITIONS[name].items()}


def sweep(add):
  for name, overrides in ADDITIONS.items():
    add(name=name, **overrides)
