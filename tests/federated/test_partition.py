"""Client partitions: IID, McMahan's label shards, Dirichlet, by writer; and the bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab.errors import ConfigError, DataError
from cnnlab.federated.partition import parse_partition, partition_indices

# 10 classes of 60 images, in a shuffled order
TARGETS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 60))


def _check_cover(parts: list[np.ndarray], n: int) -> None:
    every = np.concatenate(parts)
    assert len(every) == n and len(np.unique(every)) == n  # each image in exactly one client


def test_iid_gives_equal_parts_with_every_class() -> None:
    parts = partition_indices(TARGETS, 6, parse_partition("iid"), seed=0)
    _check_cover(parts, len(TARGETS))
    assert {len(p) for p in parts} == {100}
    assert all(len(np.unique(TARGETS[p])) == 10 for p in parts)
    again = partition_indices(TARGETS, 6, parse_partition("iid"), seed=0)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))  # seeded
    other = partition_indices(TARGETS, 6, parse_partition("iid"), seed=1)
    assert any((a != b).any() for a, b in zip(parts, other, strict=True))


def test_shards_give_each_client_at_most_two_labels() -> None:
    # 20 clients x 2 shards of 15 images from label-sorted data: a shard holds one label
    # (60 per label = 4 shards), so a client holds one or two labels
    parts = partition_indices(TARGETS, 20, parse_partition("shards:2"), seed=0)
    _check_cover(parts, len(TARGETS))
    labels = [len(np.unique(TARGETS[p])) for p in parts]
    assert max(labels) <= 2 and sum(n == 2 for n in labels) >= 10
    iid_labels = [len(np.unique(TARGETS[p])) for p in
                  partition_indices(TARGETS, 20, parse_partition("iid"), seed=0)]
    assert min(iid_labels) > 2


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_not() -> None:
    def top_share(alpha: float) -> float:
        parts = partition_indices(TARGETS, 5, parse_partition(f"dirichlet:{alpha}"), seed=0)
        _check_cover(parts, len(TARGETS))
        return float(np.mean([np.bincount(TARGETS[p], minlength=10).max() / len(p)
                              for p in parts]))

    assert top_share(0.05) > 0.4 > 0.15 > top_share(1000.0)


def test_writer_partition_holds_whole_writers() -> None:
    writers = np.repeat(np.arange(30), 20)  # 30 writers of 20 images each
    parts = partition_indices(TARGETS, 7, parse_partition("writer"), seed=0, writers=writers)
    _check_cover(parts, len(TARGETS))
    owner = {}
    for c, p in enumerate(parts):
        for w in np.unique(writers[p]):
            assert owner.setdefault(int(w), c) == c  # no writer split across clients
            assert (writers[p] == w).sum() == 20
    with pytest.raises(ConfigError, match=r"more clients \(31\) than writers \(30\)"):
        partition_indices(TARGETS, 31, parse_partition("writer"), seed=0, writers=writers)
    with pytest.raises(ConfigError, match="needs the writer of every training image"):
        partition_indices(TARGETS, 3, parse_partition("writer"), seed=0)


def test_writer_partition_on_the_qmnist_labels() -> None:
    from cnnlab.data.qmnist import load_writers

    repo_root = Path(__file__).resolve().parents[2]
    for where in (repo_root / "data", repo_root.parent / "shared" / "data"):
        try:
            labels = load_writers("train", data_dir=where)
            break
        except FileNotFoundError:
            continue
    else:
        pytest.skip("QMNIST labels not found in data/ or ../shared/data")
    parts = partition_indices(labels.classes, 100, parse_partition("writer"), seed=0,
                              writers=labels.writer)
    _check_cover(parts, 60000)
    per_client = [len(np.unique(labels.writer[p])) for p in parts]
    assert sum(per_client) == 539 and min(per_client) == 5 and max(per_client) == 6


@pytest.mark.parametrize(("text", "message"), [
    ("shard:2", "unknown partition 'shard'; did you mean 'shards'?"),
    ("dirichlet", None),
    ("dirichlet:0", "dirichlet:ALPHA needs a finite ALPHA in (0, 1e6]"),
    ("dirichlet:nan", "dirichlet:ALPHA needs a finite ALPHA"),
    ("shards:0", "shards:K needs an integer K in [1, 1000]"),
    ("iid:3", "partition 'iid' takes no parameter"),
])
def test_partition_names_are_checked(text: str, message: str | None) -> None:
    if message is None:
        assert parse_partition(text).alpha == 0.5
        return
    with pytest.raises(ConfigError) as e:
        parse_partition(text)
    assert message in str(e.value)


def test_more_clients_than_data_and_empty_clients_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"more clients \(601\) than training images \(600\)"):
        partition_indices(TARGETS, 601, parse_partition("iid"), seed=0)
    with pytest.raises(ConfigError, match="needs 1200 shards, more than the 600"):
        partition_indices(TARGETS, 600, parse_partition("shards:2"), seed=0)
    # 300 clients drawing shares of 10 classes with a tiny alpha: many get nothing
    with pytest.raises(DataError, match=r"leaves \d+ of 300 clients without data .* larger "
                                        "alpha"):
        partition_indices(TARGETS, 300, parse_partition("dirichlet:0.01"), seed=0)
