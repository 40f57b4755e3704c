"""Grain input pipelines: shuffled, augmented, batched uint8 faces.

The train stream is one endless, seeded Grain dataset (a new permutation per
epoch), so its iterator position is the whole pipeline state: it is saved
with each checkpoint and a resumed run continues at the exact batch.
"""

import collections
from collections.abc import Iterator

import grain
import jax
import ml_collections
from absl import flags

from fer_jax.data import augment
from fer_jax.data.sources import Split


class ArraySource(grain.sources.RandomAccessDataSource):
  """Grain source over in-memory arrays; elements {'image', 'label'}, and
  'targets' when the split has them (FER+ vote-based label modes)."""

  def __init__(self, split: Split):
    self._split = split

  def __len__(self) -> int:
    return len(self._split)

  def __getitem__(self, index: int) -> dict:
    element = {'image': self._split.images[index],
               'label': self._split.labels[index]}
    if self._split.targets is not None:
      element['targets'] = self._split.targets[index]
    return element


def train_dataset(split: Split, *, batch_size: int, seed: int,
                  augment_config: ml_collections.ConfigDict | None,
                  num_workers: int = 0, process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
  """Endless batches of this process's share: {'image': uint8 [B, 48, 48],
  'label': int32 [B]} (and float32 'targets' [B, classes] if the split has
  them), with `batch_size` the per-process batch.

  The one stream of shuffled, augmented faces is cut into `batch_size`
  slices and process p reads slices p, p + process_count, ...: step k's
  global batch, the processes' slices of step k in process order (as
  `to_device` assembles them), holds the same faces in the same order with
  the same augmentation whatever the number of processes, and the iterator
  position (a step count) means the same in every process.
  """
  dataset = grain.MapDataset.source(ArraySource(split)).seed(seed)
  dataset = dataset.shuffle().repeat()
  transform = augment.from_config(augment_config) if augment_config else None
  if transform is not None:
    # Seeded by the position in the whole stream, not in a process's share.
    dataset = dataset.random_map(transform)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  if process_count > 1:
    dataset = dataset[process_index::process_count]
  dataset = dataset.to_iter_dataset()
  if num_workers:
    # Grain's workers read absl flags, which only absl.app.run parses.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers))
  return dataset


def to_device(batches: grain.DatasetIterator, num_batches: int,
              sharding: jax.sharding.Sharding,
              size: int) -> Iterator[tuple[dict, dict]]:
  """Reads `num_batches` batches and puts each on the devices `size` batches
  ahead of its use.

  Each process gives its local rows; the result is one global array sharded
  along the batch axis. Yields (batch, state): `state` is the iterator's
  position right after that batch, what a checkpoint taken after training on
  it must store, since the iterator itself is up to `size` batches ahead.
  """
  def read():
    batch = next(batches)
    state = batches.get_state()
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x),
        batch), state

  queue = collections.deque()
  for _ in range(num_batches):
    queue.append(read())
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
