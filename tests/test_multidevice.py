"""Data parallel over 8 fake CPU devices matches one device, step for step.

The devices only exist in a fresh process (XLA reads the flag at start-up),
so the comparison runs in a subprocess and reports JSON.

Sharding changes the order of float sums, so gradients differ by rounding
(~1e-9). That is invisible except where the exact gradient is zero: the stem
conv's bias, which the BatchNorm after it cancels. There the gradient is pure
rounding noise, and Adam, which divides by its magnitude, turns noise of
either sign into steps of up to about the learning rate; so with Adam that
bias (and the running mean of that BatchNorm, which absorbs it) may differ
by up to 2 x steps x learning rate between any two reduction orders, device
counts or not. The test uses SGD, with which every parameter matches, and
device-side augmentation, whose per-example randomness must not depend on
the sharding (host-side augmentation happens before any sharding).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent('''
    import json

    import jax
    import numpy as np

    from fer_jax import models
    from fer_jax.config import default_config
    from fer_jax.data import device_augment, pipeline, preprocess, sources
    from fer_jax.train import optim, step

    assert jax.device_count() == 8, jax.devices()
    SPEC = preprocess.InputSpec(48, 1, (127.5,), (127.5,))
    images = np.random.default_rng(0).integers(0, 256, (64, 48, 48), np.uint8)
    split = sources.Split(images, (np.arange(64) % 7).astype(np.int32))
    model = models.create('resnet_small', 7, stem_features=8,
                          block_features=(8, 16), dropout=0.1)


    def train(devices):
      """3 steps of global batch 16 as fer_jax.train.loop runs them."""
      config = default_config()
      config.data.augment.update(where='device', brightness=0.1,
                                 contrast=0.1)
      # Small enough that the loss stays near its start (2.5-3.4): 1e-5 is
      # then tens of float32 ulps. At 0.1 it reached ~96, where an ulp is
      # 7.6e-6, and with jax 0.11 the two losses differed by two ulps.
      config.train.update(optimizer='sgd', schedule='constant',
                          learning_rate=0.001)
      optimizer = optim.create(config.train, steps_per_epoch=4)
      batch_sharding, replicated = step.data_parallel(devices)
      state = step.init_state(model, optimizer, SPEC, jax.random.key(0),
                              sharding=replicated)
      train_step = jax.jit(step.make_train_step(
          model, optimizer, SPEC, np.ones(7, np.float32), 0.0,
          device_augment.from_config(config.data.augment)), donate_argnums=0)
      batches = iter(pipeline.train_dataset(split, batch_size=16, seed=0,
                                            augment_config=None))
      losses = []
      for batch, _ in pipeline.to_device(batches, 3, batch_sharding, 2):
        assert len(batch['image'].sharding.device_set) == len(devices)
        state, metrics = train_step(state, batch, jax.random.key(1))
        losses.append(metrics['loss'])
      assert state.params['Dense_0']['kernel'].sharding.is_fully_replicated
      return jax.device_get((losses, state.params, state.batch_stats))


    def differences(a, b):
      """{leaf path: max absolute difference}."""
      return {jax.tree_util.keystr(path): float(np.max(np.abs(x - y)))
              for (path, x), y in zip(
                  jax.tree_util.tree_flatten_with_path(a)[0],
                  jax.tree.leaves(b))}


    one_losses, *one = train(jax.devices()[:1])
    eight_losses, *eight = train(jax.devices())
    print(json.dumps({
        'losses': [float(l) for l in one_losses],
        'loss': max(differences(one_losses, eight_losses).values()),
        'params': differences(one[0], eight[0]),
        'batch_stats': differences(one[1], eight[1])}))
''')


@pytest.fixture(scope='module')
def report() -> dict:
  # The flag, after conftest's quicker compiles (24 s without them,
  # 14 s with); conftest's JAX_NUM_CPU_DEVICES would override it.
  env = {k: v for k, v in os.environ.items() if k != 'JAX_NUM_CPU_DEVICES'}
  env |= {'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': os.environ['XLA_FLAGS']
          + ' --xla_force_host_platform_device_count=8'}
  done = subprocess.run([sys.executable, '-c', _SCRIPT], env=env,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device(report):
  """Same global batch, same losses, parameters and BatchNorm statistics:
  sharding splits the work, not the maths (BatchNorm statistics are over
  the global batch)."""
  assert len(report['losses']) == 3
  assert report['losses'][0] != report['losses'][2]  # It trains.
  assert report['loss'] <= 1e-5, report
  for differences in (report['params'], report['batch_stats']):
    for leaf, difference in differences.items():
      assert difference <= 1e-5, (leaf, difference)
