"""MobileNetV2 (standard, torchvision layout) fine-tuned from converted
ImageNet weights; configs/mobilenetv2_small.py is the study's 48x48 variant.

Convert the weights once (see README, "Model zoo and converted weights"):
  python -m fer_jax.convert --arch=mobilenet_v2 --src=mobilenet_v2.pth \
      --out=weights/mobilenet_v2
then train, select on PublicTest, report PrivateTest:
  python -m fer_jax.main --config=configs/mobilenet_v2.py \
      --workdir=runs/mobilenet_v2 \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz \
      --config.model.init_from=weights/mobilenet_v2

Input: the grey 48x48 faces resized to 224x224, repeated to 3 channels and
ImageNet-normalised, as the weights expect. For a quick CPU check use
`--config.data.image_size=96 --config.data.max_per_class=50
--config.train.epochs=1`. Without init_from it trains from scratch. Head:
'dense128' (global average pooling -> dense(128, ReLU) -> classifier);
'imagenet' keeps MobileNetV2's own dropout -> dense classifier (see
fer_jax/models/heads.py for the others).
"""

from fer_jax.config import default_config


def get_config():
  config = default_config()
  config.data.image_size = 224
  config.data.channels = 3
  config.data.normalization = 'imagenet'
  config.model.name = 'mobilenet_v2'
  # 'imagenet', 'gap_bn_dropout_dense256', 'flatten_dense256_l2', 'dense128'.
  config.model.head = 'dense128'
  config.model.dropout = 0.2
  config.train.learning_rate = 1e-4  # Fine-tuning pretrained weights.
  return config
