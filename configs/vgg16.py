"""VGG16 (torchvision layout) fine-tuned from converted ImageNet weights.

Commands and input: fer_jax.config.imagenet_port_config (224 is ~30 GFLOPs
per image). Or from Keras's weights (`keras.applications.VGG16(
weights='imagenet')` downloads
~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5; the `_notop`
file gives the conv layers only), which expect Keras's 'caffe' input (0-255
minus the BGR ImageNet means; converted.json records it and a run with
another normalisation stops before training):
  python -m fer_jax.convert --arch=vgg16 \
      --src=vgg16_weights_tf_dim_ordering_tf_kernels.h5 --out=weights/vgg16
  python -m fer_jax.main --config=configs/vgg16.py --workdir=runs/vgg16 \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz \
      --config.model.init_from=weights/vgg16 \
      --config.data.normalization=caffe

Head: the reference study's flatten -> dense(256) -> dropout(0.5) with L2
(weight_decay).
"""

from fer_jax.config import imagenet_port_config


def get_config():
  config = imagenet_port_config('vgg16', head='flatten_dense256_l2',
                                dropout=0.5)
  config.train.weight_decay = 1e-4  # The study's L2, added to the gradient.
  return config
