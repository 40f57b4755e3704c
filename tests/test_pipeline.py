"""The Grain train stream: shuffling per epoch, batching, sharding, resume."""

import itertools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from fer_jax.config import default_config
from fer_jax.data import pipeline, sources

N = 40


def _split() -> sources.Split:
  """Image i is filled with the value i, so batches reveal their indices."""
  ids = np.arange(N)
  images = np.broadcast_to(ids[:, None, None], (N, 48, 48)).astype(np.uint8)
  return sources.Split(images, (ids % 7).astype(np.int32))


def _ids(batch) -> list[int]:
  return batch['image'][:, 0, 0].tolist()


def _stream(**kwargs):
  return iter(pipeline.train_dataset(_split(), **{
      'batch_size': 8, 'seed': 0, 'augment_config': None, **kwargs}))


def test_batches_have_uint8_images_and_int_labels():
  batch = next(_stream())
  assert batch['image'].shape == (8, 48, 48)
  assert batch['image'].dtype == np.uint8
  assert np.array_equal(batch['label'], np.asarray(_ids(batch)) % 7)


def test_every_epoch_is_a_new_permutation():
  ids = sum((_ids(b) for b in itertools.islice(_stream(), 3 * N // 8)), [])
  epochs = [ids[i * N:(i + 1) * N] for i in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(N))
  assert epochs[0] != epochs[1] != epochs[2]
  assert epochs[0] != list(range(N))


def test_same_seed_same_stream_other_seed_other_stream():
  first = [_ids(b) for b in itertools.islice(_stream(), 5)]
  assert first == [_ids(b) for b in itertools.islice(_stream(), 5)]
  assert first != [_ids(b) for b in itertools.islice(_stream(seed=1), 5)]


def test_iterator_state_resumes_at_the_exact_batch():
  stream = _stream()
  for _ in range(7):
    next(stream)
  state = stream.get_state()
  expected = [_ids(next(stream)) for _ in range(4)]
  resumed = _stream()
  resumed.set_state(state)
  assert [_ids(next(resumed)) for _ in range(4)] == expected


def test_processes_read_disjoint_shares():
  shares = [sum((_ids(b) for b in itertools.islice(
      _stream(batch_size=4, process_index=p, process_count=2), N // 8)), [])
            for p in range(2)]
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == list(range(N))


def test_augmentation_runs_in_the_pipeline_and_keeps_uint8():
  # A bar off the centre: the affine moves it (a constant image would not).
  images = np.zeros((N, 48, 48), np.uint8)
  images[:, 10:20, 5:30] = 200
  split = sources.Split(images, (np.arange(N) % 7).astype(np.int32))

  def first_batch(augment_config):
    return next(iter(pipeline.train_dataset(
        split, batch_size=8, seed=0, augment_config=augment_config)))

  batch = first_batch(default_config().data.augment)
  assert batch['image'].shape == (8, 48, 48)
  assert batch['image'].dtype == np.uint8
  assert not np.array_equal(batch['image'], first_batch(None)['image'])


@pytest.mark.parametrize('size', [0, 2, 5])
def test_to_device_keeps_order_and_tracks_the_consumed_position(size):
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, PartitionSpec('data'))
  stream, reference = _stream(), _stream()
  on_device = list(pipeline.to_device(stream, 3, sharding, size=size))
  assert len(on_device) == 3
  for device_batch, state in on_device:
    host_batch = next(reference)
    assert isinstance(device_batch['image'], jax.Array)
    assert np.array_equal(device_batch['image'], host_batch['image'])
    assert state == reference.get_state()
  assert stream.get_state() == reference.get_state()  # Read no further.


def test_worker_processes_give_the_same_stream():
  in_process = [_ids(b) for b in itertools.islice(_stream(), 6)]
  workers = _stream(num_workers=2)
  assert [_ids(b) for b in itertools.islice(workers, 6)] == in_process
