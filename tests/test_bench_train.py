"""experiments/bench_train.py, where issue 7's figures and the device
session's come from: it runs, prints its table, and ends with the line
that scripts parse."""

import functools
import importlib.util
import os
import re
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST_LINE = re.compile(r'resnet_small train_step img/s: jax=([\d.]+) '
                       r'torch=([\d.]+|n/a) ratio=([\d.]+|n/a)')


def test_benchmark_prints_a_row_per_framework_and_the_ratio(tmp_path):
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'bench_train.py'),
       '--model=resnet_small', '--steps=2', '--warmup=1', '--batch_size=8',
       f'--data={tmp_path / "absent.csv"}'],  # Synthetic faces.
      capture_output=True, text=True, check=False, timeout=300,
      # A preloaded library (there, a malloc such as tcmalloc) is named in
      # the header; the C library itself is harmless to preload.
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'LD_PRELOAD': 'libc.so.6'})
  assert done.returncode == 0, done.stderr[-3000:]
  assert ('LD_PRELOAD libc.so.6; batch 8, 2 timed steps after 1; data '
          'synthetic') in done.stdout
  assert '| jax | resnet_small | 417,287 | cpu x1' in done.stdout
  match = LAST_LINE.fullmatch(done.stdout.splitlines()[-1])
  assert match, done.stdout
  jax_rate, torch_rate, ratio = match.groups()
  assert float(jax_rate) > 0
  if importlib.util.find_spec('torch') is None:
    assert (torch_rate, ratio) == ('n/a', 'n/a')
  else:
    assert '| torch | resnet_small | 417,287 | cpu' in done.stdout
    # Of the unrounded rates.
    assert float(ratio) == pytest.approx(
        float(jax_rate) / float(torch_rate), rel=0.02, abs=0.006)


@functools.cache  # Its absl flags can be defined once.
def _bench_train():
  spec = importlib.util.spec_from_file_location(
      'bench_train', os.path.join(ROOT, 'experiments', 'bench_train.py'))
  bench_train = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench_train)
  return bench_train


def _event(name, start_ms, ms):
  return types.SimpleNamespace(name=name, start_ns=start_ms * 1e6,
                               duration_ns=ms * 1e6)


def _plane(name, *events):
  return types.SimpleNamespace(
      name=name, lines=[types.SimpleNamespace(events=list(events))])


def test_op_profile_of_a_cpu_trace_names_the_thunks_kind_and_library():
  # The kernel gradients of one 3x3 convolution at 48x48: a YNNPACK fusion
  # and an op of its own (Eigen's, whose work the trace does not time).
  hlo = '''
%fused_computation.7 (param_0: f32[64,48,48,32], param_1: f32[64,48,48,64]) -> f32[3,3,32,64] {
  ROOT %convolution.2 = f32[3,3,32,64]{3,2,1,0} convolution(%param_0, %param_1), window={size=48x48 pad=1_1x1_1}, dim_labels=f01b_i01o->01bf
}
ENTRY %main {
  %ynn_fusion.7 = f32[3,3,32,64]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.7
  %convolution.8 = f32[64,3,3,64]{3,2,1,0} convolution(%c, %d), window={size=48x48 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
  %wrapped_scatter.1 = f32[64,48,48,64]{3,2,1,0} fusion(%e), kind=kLoop, calls=%wrapped_scatter_computation
}
%wrapped_scatter_computation (param_0.1: f32[64,48,48,64]) -> f32[64,48,48,64] {
  ROOT %scatter.1 = f32[64,48,48,64]{3,2,1,0} scatter(%param_0.1)
}
'''
  profile = types.SimpleNamespace(planes=[_plane(
      '/host:CPU', _event('ynn_fusion.7', 0, 6),
      _event('convolution.8', 6, 0.02), _event('wrapped_scatter.1', 7, 2),
      _event('ThunkExecutor::Execute', 0, 9))])
  lines = _bench_train().op_profile(profile, lambda: hlo, steps=2)
  assert lines[:4] == [
      'Op time per step, summed over threads: 4.01 ms',
      '      3.00 ms  74.8%  conv kernel gradient',
      '      1.00 ms  24.9%  max-pool gradient (scatter)',
      '      0.01 ms   0.2%  conv kernel gradient, Eigen: not timed']


def test_op_profile_of_a_gpu_trace_groups_its_kernels_by_kind():
  bench_train = _bench_train()
  event, plane = _event, _plane
  # Two steps; the host's events are not the GPU's time.
  profile = types.SimpleNamespace(planes=[
      plane('/host:CPU', event('PjitFunction(train_step)', 0, 9)),
      plane('/device:GPU:0',
            event('sm90_xmma_fprop_implicit_gemm_bf16', 0, 2),
            event('input_reduce_fusion_9', 2, 1.2),
            event('loop_add_fusion_2', 3.2, 0.5),
            event('sm90_xmma_dgrad_implicit_gemm_bf16', 4, 2),
            event('input_scatter_fusion', 6, 1.5),
            event('loop_add_fusion_2', 7.5, 0.5))])
  lines = bench_train.op_profile(profile, lambda: '', steps=2)
  assert lines[:6] == [
      'GPU busy 3.85 ms of each 4.00 ms step, 3 kernels a step',
      'Op time per step: 3.85 ms',
      '      2.00 ms  51.9%  convolutions (cuDNN: forward, input and '
      'kernel gradients)',
      '      0.75 ms  19.5%  max-pool gradient (scatter)',
      '      0.60 ms  15.6%  reductions (BN statistics and their '
      'gradients, loss)',
      '      0.50 ms  13.0%  elementwise fusions (BN, ReLU, Adam, '
      'augmentation, ...)']
