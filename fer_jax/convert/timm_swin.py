"""timm's Swin checkpoints (.pth or .safetensors) -> the swin_tiny port.

timm 1.0's state-dict keys name the port's modules as torchvision's do
(`layers.1.blocks.0.attn.qkv.weight` -> `layers_1/blocks_0/attn/qkv/kernel`,
`head.fc` -> `head/fc`; fer_jax.convert maps them), plus each attention's
`relative_position_bias_table`, which is taken as it is. What this module
adds: reading `.safetensors` (the Hugging Face hub's `model.safetensors`,
with the `safetensors` package's numpy loader, no torch), and normalising a
state dict to timm 1.0's layout: the computed buffers
(`relative_position_index`, `attn_mask`, stored by older versions) are
dropped, and the original Microsoft layout (a stage's patch merging at its
end, `layers.0.downsample`, and `head.weight`) is renamed as timm's
checkpoint_filter_fn does. The weights expect 224x224 RGB input with
ImageNet normalisation.
"""

import re

import numpy as np

from fer_jax.convert import reading
from fer_jax.errors import UserError

# Port -> timm model name.
ARCHS = {'swin_tiny': 'swin_tiny_patch4_window7_224'}
FORMAT = 'timm'
NORMALIZATION = 'imagenet'
# Buffers computed by the port, not loaded.
BUFFERS = ('relative_position_index', 'attn_mask')


def how_to_obtain(arch: str) -> str:
  """One sentence: how to get and convert timm's weights of `arch`."""
  name = ARCHS[arch]
  return (f'on a machine with internet, save them with `import timm, torch; '
          f"torch.save(timm.create_model('{name}', pretrained=True)"
          f'.state_dict(), "{arch}.pth")` (or download model.safetensors '
          f'from the Hugging Face hub repo timm/{name}.ms_in1k), then run '
          f'`python -m fer_jax.convert --arch={arch} --src={arch}.pth '
          f'--out=weights/{arch}` and set '
          f'--config.model.init_from=weights/{arch}')


def read_safetensors(path: str, how_to_obtain_it: str
                     ) -> dict[str, np.ndarray]:
  """A .safetensors state dict as numpy arrays (no torch needed)."""
  safetensors_numpy = reading.library_for(path, 'safetensors.numpy', 'torch',
                                          how_to_obtain_it)
  try:
    state = safetensors_numpy.load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'{path} is not a readable .safetensors file ({e}); '
                    f'{how_to_obtain_it}.') from None
  return {k.removeprefix('module.'): v for k, v in state.items()}


def normalise(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`state_dict` in timm 1.0's Swin layout, without the computed buffers."""
  # The original layout merges patches at the end of stages 1-3, timm at the
  # start of stages 2-4 (see timm's swin_transformer.checkpoint_filter_fn).
  old_layout = 'layers.0.downsample.reduction.weight' in state_dict
  out = {}
  for key, value in state_dict.items():
    if key.rsplit('.', 1)[-1] in BUFFERS:
      continue
    if old_layout:
      key = re.sub(r'layers\.(\d+)\.downsample',
                   lambda m: f'layers.{int(m.group(1)) + 1}.downsample', key)
      key = re.sub(r'^head\.', 'head.fc.', key)
    out[key] = value
  return out
