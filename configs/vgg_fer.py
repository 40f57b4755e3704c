"""The from-scratch large model: a VGG for 48x48 faces (40.4M parameters).

Khaireddin & Chen's VGGNet and recipe (arXiv 2105.03588: 73.28% on
FER2013, reported on PublicTest; fer_jax selects on PublicTest and reports
PrivateTest): SGD with Nesterov momentum 0.9, learning rate 0.01, L2 1e-4,
batch 64, reduce-on-plateau of PublicTest accuracy (x0.75 after 5 epochs),
up to 300 epochs; shifts up to 20%, rotation, zoom, flips and random
erasing. Train, select on PublicTest, report PrivateTest with ten crops:
  python -m fer_jax.main --config=configs/vgg_fer.py --workdir=runs/vgg_fer \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz
  python -m fer_jax.report --workdirs runs/vgg_fer --out reports/vgg_fer \
      --ten_crop

Where it departs from the paper: each step sees a batch of whole faces
(the paper trains on all ten 40x40 crops of each face, so a flatten of
3x3x512 here against its 2x2x512); early stopping after 30 epochs without a
better PublicTest accuracy. It needs an accelerator (911 MFLOPs per face,
1.8 resnet_small's; 10 epochs took 1 h 44 min on a 2-core CPU and were
still climbing: experiments/RESULTS.md); add
`--config.train.compute_dtype=bfloat16` there. Also the teacher for
distilling into the small model (experiments/accuracy_ablation_sweep.py).
"""

from fer_jax.config import default_config


def get_config():
  config = default_config()
  config.model.name = 'vgg_fer'
  config.model.stage_features = (64, 128, 256, 512)
  config.model.convs_per_stage = 2
  config.model.hidden_units = (4096, 4096)
  config.model.dropout = 0.2
  config.data.augment.update(rotation=10.0, translation=0.2, zoom=0.1,
                             hflip=True, erasing=0.5)
  config.train.update(
      epochs=300, optimizer='sgd', nesterov=True, momentum=0.9,
      learning_rate=0.01, weight_decay=1e-4, schedule='plateau',
      plateau_factor=0.75, plateau_patience=5, plateau_metric='val/accuracy',
      early_stopping_patience=30, selection_metric='val/accuracy')
  return config
