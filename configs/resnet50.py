"""ResNet-50 (torchvision layout) fine-tuned from converted ImageNet weights.

Commands and input: fer_jax.config.imagenet_port_config. Head: the reference
study's global average pooling -> BN -> dropout -> dense(256).
"""

from fer_jax.config import imagenet_port_config


def get_config():
  return imagenet_port_config('resnet50', head='gap_bn_dropout_dense256',
                              dropout=0.5)
