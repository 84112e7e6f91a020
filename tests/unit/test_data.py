"""Data order: a pure function of (seed, position), independent of how many processes share a batch."""

from gptnl.train.data import SequenceOrder, micro_batch_positions, validation_indices


def global_batch(position, world, mb, ga):
    return sorted(p for m in range(ga) for r in range(world) for p in micro_batch_positions(position, m, r, world, mb))


def test_global_batch_does_not_depend_on_world_size():
    assert global_batch(64, world=2, mb=4, ga=1) == global_batch(64, world=1, mb=4, ga=2) == list(range(64, 72))


def test_order_is_seeded_per_epoch_and_reproducible():
    a, b = SequenceOrder(50, seed=1), SequenceOrder(50, seed=1)
    epoch0 = [a[i] for i in range(50)]
    assert sorted(epoch0) == list(range(50))
    assert [a[i] for i in range(50, 100)] != epoch0  # a new permutation each epoch
    assert [b[i] for i in range(75, 25, -1)] == [a[i] for i in range(75, 25, -1)]  # random access agrees
    assert [SequenceOrder(50, seed=2)[i] for i in range(50)] != epoch0


def test_validation_slice_is_split_across_ranks_without_overlap():
    parts = [validation_indices(30, batches=2, micro_batch=4, rank=r, world=2) for r in range(2)]
    seen = [i for part in parts for batch in part for i in batch]
    assert sorted(seen) == list(range(16))
