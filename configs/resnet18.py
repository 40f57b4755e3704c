"""ResNet-18 (torchvision layout) fine-tuned from converted ImageNet weights.

Convert the weights once (see README, "Model zoo and converted weights"):
  python -m fer_jax.convert --arch=resnet18 --src=resnet18.pth \
      --out=weights/resnet18
then train, select on PublicTest, report PrivateTest:
  python -m fer_jax.main --config=configs/resnet18.py --workdir=runs/resnet18 \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz \
      --config.model.init_from=weights/resnet18

Input: the grey 48x48 faces resized to 224x224, repeated to 3 channels and
ImageNet-normalised, as the weights expect. For a quick CPU check use
`--config.data.image_size=96 --config.data.max_per_class=50
--config.train.epochs=1`. Without init_from it trains from scratch. Head: the
reference study's global average pooling -> BN -> dropout -> dense(256);
'imagenet' keeps ResNet's own GAP -> dense classifier (see
fer_jax/models/heads.py for the others).
"""

from fer_jax.config import default_config


def get_config():
  config = default_config()
  config.data.image_size = 224
  config.data.channels = 3
  config.data.normalization = 'imagenet'
  config.model.name = 'resnet18'
  # 'imagenet', 'gap_bn_dropout_dense256', 'flatten_dense256_l2', 'dense128'.
  config.model.head = 'gap_bn_dropout_dense256'
  config.model.dropout = 0.5
  config.train.learning_rate = 1e-4  # Fine-tuning pretrained weights.
  return config
