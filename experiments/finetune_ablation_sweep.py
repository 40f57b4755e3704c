"""Issue 6's techniques as 2-epoch fine-tunes of the shipped model: 7 runs.

  python -m fer_jax.sweep --config=experiments/finetune_ablation_sweep.py \
      --workdir=runs/finetune_ablation \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

A stand-in for experiments/accuracy_ablation_sweep.py sized for a CPU
(about 2 hours on 2 cores, where that sweep's 9 runs of 100 epochs take
about 110): the same additions, each alone, but on the model in
fer_jax/pretrained, trained 2 more epochs. It measures what a technique
does to a model that is already trained, in 900 steps, not what it does to
a long schedule from scratch, where the regularisers (label smoothing,
erasing, mixup, cutmix) are expected to pay off late; read it as that.
The runs keep seed 0. At 6d86402, where experiments/RESULTS.md measured
them, every stage of the shipped model had trained with seed 0 on the
same faces, so their batches were the ones it saw in the first epochs of
each stage, in the same order with the same augmentation (README, Starting
from a trained run), and `seed=1` repeated the base on a new stream: the
difference that the others are read against, seed noise and the replay
together. Erasing, mixup and cutmix change the replayed images as well
as the training. The model shipped since 2026-12-05 trained its last stage
on seed 2, so from it neither run replays (a run that does warns): the
base and `seed=1` differ by seed noise alone.

Base: the shipped model (its sha256 in each run's init_from.json; since
2026-12-05 resnet_small_v2, so configs/resnet_small_v2.py: the figures in
RESULTS.md are of resnet_small, shipped then), Adam
3e-4 on a cosine over the 2 epochs without warm-up, no EMA, no early
stopping, checkpoints selected on PublicTest accuracy as in the long
sweep. The optimizer and schedule additions (`adamw`, `plateau`) and `all`
are left out: 2 epochs do not compare schedules.
"""

import os

from fer_jax import sweeps
from fer_jax.predict.predictor import PRETRAINED_DIR

_HERE = os.path.dirname(os.path.abspath(__file__))
_LONG_SWEEP = sweeps.load_module(
    os.path.join(_HERE, 'accuracy_ablation_sweep.py'))
TECHNIQUES = ('label_smoothing', 'erasing', 'mixup', 'cutmix', 'ema')


def get_config():
  config = sweeps.load_config(os.path.join(_HERE, os.pardir, 'configs',
                                           'resnet_small_v2.py'))
  config.model.init_from = PRETRAINED_DIR
  config.train.update(
      epochs=2, optimizer='adam', learning_rate=3e-4, schedule='cosine',
      warmup_epochs=0, ema_decay=0.0, early_stopping_patience=0,
      selection_metric='val/accuracy')
  return config


def sweep(add):
  add(name='base')
  add(seed=1)
  for name in TECHNIQUES:
    add(name=name, **_LONG_SWEEP.ADDITIONS[name])
