"""MobileNetV2 (standard, torchvision layout) fine-tuned from converted
ImageNet weights; configs/mobilenetv2_small.py is the study's 48x48 variant.

Commands and input: fer_jax.config.imagenet_port_config. Head: 'dense128'
(global average pooling -> dense(128, ReLU) -> classifier).
"""

from fer_jax.config import imagenet_port_config


def get_config():
  return imagenet_port_config('mobilenet_v2', head='dense128', dropout=0.2)
