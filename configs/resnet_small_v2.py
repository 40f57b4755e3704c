"""resnet_small, 13 convolutions deep instead of 5, for fewer FLOPs: 481k
parameters, 392 MFLOPs.

  python -m fer_jax.main --config=configs/resnet_small_v2.py \
      --workdir=runs/resnet_small_v2 \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

configs/resnet_small.py's model spends its 417k parameters on five
convolutions, 64 and 128 channels wide at 48x48 and 24x24 (512 MFLOPs), and
almost a third of them (129k) on a classifier over the flattened 12x12x128
map. This one has thirteen: a stem and three stages of two residual
blocks, 32, 64 and 96 channels wide at 48x48, 24x24 and 12x12, each stage
followed by a max-pool, then global average pooling into a 96-input
classifier (679 parameters). The nets near 73% on FER2013 are deeper
(vgg_fer, 73.28% in its paper: 8 convolutions and 3 dense layers, 40M
parameters), and under 500k parameters depth has to come from narrower
layers. The recipe is configs/resnet_small.py's. The model in
fer_jax/pretrained is this one, 8 epochs of cosine then four 12-epoch warm
restarts, the last two with `data.augment.erasing=0.5`, which
experiments/shipped_model_sweep.py trains in one command
(experiments/RESULTS.md, "The shipped model: resnet_small_v2"; 68.65%
PrivateTest, 70.60% with ten crops; its last restart on seed 5: 69.35%,
70.49% with ten crops, and a fifth from that on seed 6: 68.96%, 71.08%
with ten crops, not shipped, flat; the third restart on seeds 3 and 4:
68.49% and 68.07%, 70.13% and 70.24% with ten crops); issue 6's long
recipe trains it as experiments/accuracy_ablation_sweep.py's
`resnet_small_v2` run.
"""

import os

from fer_jax import sweeps

RESNET_SMALL = os.path.join(os.path.dirname(__file__), 'resnet_small.py')


def get_config():
  config = sweeps.load_config(RESNET_SMALL)
  config.model.block_features = (32, 64, 96)
  config.model.blocks_per_stage = 2
  config.model.pooling = 'gap'
  return config
