import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmeta.errors import DataError
from medmeta.protocol import HELD_OUT_CLASSES, class_split, meta_train_pool
from medmeta.tasks import ClassSplit, EpisodeSampler, Task


@st.composite
def labelled_pool(draw):
    """Labels of a pool with 2-12 classes of 3-30 items each, shuffled."""
    sizes = draw(st.lists(st.integers(3, 30), min_size=2, max_size=12))
    labels = np.repeat([f"c{i}" for i in range(len(sizes))], sizes)
    return np.random.default_rng(draw(st.integers(0, 10**6))).permutation(labels)


@st.composite
def sampler_args(draw):
    labels = draw(labelled_pool())
    counts = {c: int((labels == c).sum()) for c in np.unique(labels)}
    n_way = draw(st.integers(1, len(counts)))
    k_shot = draw(st.integers(1, 3))
    n_query = draw(st.integers(0, min(counts.values()) - k_shot))
    return labels, n_way, k_shot, n_query


@settings(max_examples=80, deadline=None)
@given(sampler_args(), st.integers(0, 2**31))
def test_episodes_have_exact_sizes_and_no_overlap(args, seed):
    labels, n_way, k, q = args
    sampler = EpisodeSampler(labels, n_way, k, q, seed=seed)
    for _ in range(3):
        ep = sampler.sample()
        assert len(ep.support) == n_way * k and len(ep.query) == n_way * q
        assert len(set(ep.classes)) == n_way
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
        for j, c in enumerate(ep.classes):
            assert (labels[ep.support[j * k:(j + 1) * k]] == c).all()
            assert (labels[ep.query[j * q:(j + 1) * q]] == c).all()


@settings(max_examples=40, deadline=None)
@given(sampler_args(), st.integers(0, 2**31))
def test_same_seed_same_episodes(args, seed):
    labels, n_way, k, q = args
    a, b = (EpisodeSampler(labels, n_way, k, q, seed=seed) for _ in range(2))
    for _ in range(3):
        ea, eb = a.sample(), b.sample()
        assert ea.classes == eb.classes
        assert np.array_equal(ea.support, eb.support) and np.array_equal(ea.query, eb.query)


@settings(max_examples=60, deadline=None)
@given(labelled_pool(), st.integers(0, 3), st.integers(0, 3), st.integers(0, 1000))
def test_class_splits_never_leak(labels, n_val, n_test, seed):
    classes = sorted(set(labels.tolist()))
    if n_val + n_test > len(classes) - 1:
        return
    split = ClassSplit.random(classes, n_val, n_test, seed)
    assert split.train | split.val | split.test == set(classes)
    assert len(split.val) == n_val and len(split.test) == n_test
    if len(split.train) >= 1:
        sampler = EpisodeSampler(labels, 1, 1, 1, classes=split.train, seed=seed)
        for _ in range(5):
            assert set(sampler.sample().classes) <= split.train


def test_overlapping_split_is_refused():
    with pytest.raises(ValueError, match="both train and test"):
        ClassSplit(train=frozenset({"a", "b"}), test=frozenset({"b"}))


def test_availability_errors_name_the_classes():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"] * 10
    with pytest.raises(DataError, match=r"too few in \{'b': 3\}"):
        EpisodeSampler(labels, 2, 2, 2)
    with pytest.raises(DataError, match="5-way episodes need 5 classes"):
        EpisodeSampler(labels, 5, 1, 1)
    with pytest.raises(DataError, match="classes with no items"):
        EpisodeSampler(labels, 1, 1, 1, classes=["z"])


def test_task_gathers_items_and_checks_lengths():
    x = np.arange(40).reshape(20, 2)
    labels = np.repeat(["a", "b"], 10)
    task = EpisodeSampler(labels, 2, 3, 4, seed=1).task(x)
    assert task.support_x.shape == (6, 2) and task.query_x.shape == (8, 2)
    assert task.support_y.tolist() == [0, 0, 0, 1, 1, 1]
    for j, c in enumerate(task.metadata["classes"]):
        assert (labels[task.metadata["support_ids"][task.support_y == j]] == c).all()
    with pytest.raises(ValueError, match="support set has 2 inputs but 3 targets"):
        Task(x[:2], [0, 1, 1], x[:1], [0])


def test_protocol_keeps_held_out_classes_out_of_meta_training(samples):
    split = class_split()
    assert split.test == HELD_OUT_CLASSES and not split.train & HELD_OUT_CLASSES
    for part in ("train", "val"):
        _, keys = meta_train_pool(part)
        assert set(keys) == set(split.train)
        assert len(set(keys)) == 8 + 6
