"""The lightweight ResNet (417k parameters) with the reference study's recipe.

Train, select on PublicTest, report PrivateTest:
  python -m fer_jax.main --config=configs/resnet_small.py \
      --workdir=runs/resnet_small \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Recipe: Adam 1e-3, batch 64, up to 40 epochs, reduce-on-plateau (x0.5 after
3 epochs), early stopping on validation macro-F1, rotation/shift/zoom/flip.
Quick check on a laptop: add `--config.data.max_per_class=100
--config.train.epochs=2`.
"""

from fer_jax.config import default_config


def get_config():
  config = default_config()
  config.model.name = 'resnet_small'
  config.model.stem_features = 32
  config.model.block_features = (64, 128)
  config.model.pooling = 'flatten'  # Or 'gap'.
  config.model.hidden_units = 0
  config.model.dropout = 0.15
  # model.blocks_per_stage stays at the model's 1 unlisted, so that runs of
  # this file from before it existed still match it (sweeps skip them as
  # finished); configs/resnet_small_v2.py sets it.
  return config
