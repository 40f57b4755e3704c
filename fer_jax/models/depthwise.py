"""Depthwise convolutions as sums of shifted products, for `nn.Conv`.

`nn.Conv(..., feature_group_count=channels, conv_general_dilated=
depthwise.conv_general_dilated)` has the parameters of the grouped
convolution it replaces (kernel [kh, kw, 1, channels]: checkpoints and
converted torchvision weights load unchanged) and computes the same
function as kh * kw strided slices of the padded input, each times one
row of the kernel, summed in float32. XLA fuses these (and their
gradients) into elementwise loops and reductions: on the CPU, forward and
backward, 4-6x faster than its grouped `lax.conv_general_dilated`
(experiments/bench_depthwise.py; grouped kernel gradients are slow on GPUs
too: jax-ml/jax#13800, #23713).
"""

import jax.numpy as jnp
from jax import lax


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None):
  """`lax.conv_general_dilated` for what a depthwise `nn.Conv` passes it:
  NHWC input, HWIO kernel [kh, kw, 1, channels], one group per channel,
  no dilation. `precision` is unused: the products are float32 multiplies.
  """
  del precision
  channels = lhs.shape[-1]
  kernel_h, kernel_w, in_per_group, out_features = rhs.shape
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                    ('NHWC', 'HWIO', 'NHWC'))
  dilated = any(d != 1 for d in (*(lhs_dilation or ()),
                                 *(rhs_dilation or ())))
  if (lhs.ndim != 4 or in_per_group != 1 or out_features != channels
      or feature_group_count != channels or dilated
      or (dimension_numbers is not None
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                         dimension_numbers) != nhwc)):
    raise ValueError(
        'depthwise.conv_general_dilated computes undilated NHWC depthwise '
        f'convolutions only, not input {lhs.shape} * kernel {rhs.shape} '
        f'with {feature_group_count} groups, dilations {lhs_dilation}, '
        f'{rhs_dilation}.')
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kernel_h, kernel_w),
                                  window_strides, padding)
  padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  stride_h, stride_w = window_strides
  out_h = (padded.shape[1] - kernel_h) // stride_h + 1
  out_w = (padded.shape[2] - kernel_w) // stride_w + 1
  total = None
  for i in range(kernel_h):
    for j in range(kernel_w):
      window = padded[:, i:i + stride_h * (out_h - 1) + 1:stride_h,
                      j:j + stride_w * (out_w - 1) + 1:stride_w, :]
      term = window.astype(jnp.float32) * rhs[i, j, 0].astype(jnp.float32)
      total = term if total is None else total + term
  return total.astype(lhs.dtype)
