"""ShuffleNetV2 1.0x (torchvision's shufflenet_v2_x1_0) fine-tuned from
converted ImageNet weights.

Save `torchvision.models.shufflenet_v2_x1_0(weights='IMAGENET1K_V1')`'s state
dict as shufflenet_v2.pth; commands and input:
fer_jax.config.imagenet_port_config. Head: the reference study's global
average pooling -> BN -> dropout -> dense(256).
"""

from fer_jax.config import imagenet_port_config


def get_config():
  return imagenet_port_config('shufflenet_v2', head='gap_bn_dropout_dense256',
                              dropout=0.5)
