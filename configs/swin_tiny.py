"""Swin-T (timm's swin_tiny_patch4_window7_224) fine-tuned from its weights.

Convert the weights on a machine with internet (README, "Model zoo and
converted weights"):
  python -c "import timm, torch; torch.save(timm.create_model(
      'swin_tiny_patch4_window7_224', pretrained=True).state_dict(),
      'swin_tiny.pth')"
(or download model.safetensors from the Hugging Face hub repo
timm/swin_tiny_patch4_window7_224.ms_in1k; no torch needed to read it); the
rest of the commands: fer_jax.config.imagenet_port_config.

Input: the grey 48x48 faces resized to 224x224, repeated to 3 channels and
ImageNet-normalised, as the weights expect (any side divisible by 32 works;
for a quick CPU check use `--config.data.image_size=64
--config.data.max_per_class=50 --config.train.epochs=1`). Head: timm's own
final LayerNorm -> global average pooling -> dense, the dense afresh for the
FER classes (the study heads of fer_jax/models/heads.py also work). Recipe:
AdamW 1e-4 with weight decay 0.05 (kernels only: the optimizer's mask also
decays the 2-D relative position bias tables, which timm exempts), a
one-epoch warm-up then cosine decay, stochastic depth 0.1. Without init_from
it trains from scratch, which a transformer does poorly on FER2013's 28k
faces.
"""

from fer_jax.config import imagenet_port_config


def get_config():
  config = imagenet_port_config('swin_tiny', head='imagenet', dropout=0.0)
  config.model.drop_path_rate = 0.1  # Stochastic depth; training only.
  config.train.optimizer = 'adamw'
  config.train.weight_decay = 0.05  # Decoupled (AdamW).
  config.train.schedule = 'cosine'
  config.train.warmup_epochs = 1.0
  return config
