"""The modified MobileNetV2 (132k parameters) with the reference study's recipe.

Train, select on PublicTest, report PrivateTest:
  python -m fer_jax.main --config=configs/mobilenetv2_small.py \
      --workdir=runs/mobilenetv2_small \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

The recipe of configs/resnet_small.py (Adam 1e-3, batch 64, up to 40 epochs,
reduce-on-plateau, early stopping on validation macro-F1, rotation/shift/
zoom/flip) with dropout 0.2 before the classifier. Quick check on a laptop:
add `--config.data.max_per_class=100 --config.train.epochs=2`.
"""

from fer_jax.config import default_config


def get_config():
  config = default_config()
  config.model.name = 'mobilenetv2_small'
  config.model.stem_features = 32
  # (expansion, channels, repeats, stride of the first repeat) per stage.
  config.model.stages = ((1, 16, 1, 1), (6, 24, 1, 1), (6, 32, 2, 2),
                         (6, 64, 1, 2), (6, 96, 1, 1))
  config.model.head_features = 128
  config.model.dropout = 0.2
  return config
