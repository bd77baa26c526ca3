import numpy as np
import pytest

from medmeta.datasets.medmnist import load_medmnist
from medmeta.errors import DataError
from medmeta.imaging import to_tensor


@pytest.mark.parametrize(("name", "channels", "n_classes"), [
    ("bloodmnist", 3, 8), ("organamnist", 1, 11), ("pneumoniamnist", 1, 2), ("breastmnist", 1, 2),
])
def test_samples_load_every_split(samples, name, channels, n_classes):
    for split in ("train", "val", "test"):
        s = load_medmnist(samples / "medmnist" / f"{name}.npz", split)
        assert s.n_channels == channels
        assert len(s.class_names) == n_classes
        assert s.labels.dtype == np.int64 and s.labels.ndim == 1
        assert s.images.shape[1:3] == (28, 28)
        assert set(np.unique(s.labels)) == set(range(n_classes))
        assert s.split == split and s.name == name


def test_class_keys_are_global(samples):
    s = load_medmnist(samples / "medmnist" / "pneumoniamnist.npz", "test")
    assert s.class_keys == ("pneumoniamnist:normal", "pneumoniamnist:pneumonia")
    assert s.item_keys()[0] in s.class_keys


def test_tensor_conversion_grey_and_colour(samples):
    grey = load_medmnist(samples / "medmnist" / "breastmnist.npz", "test").images[:4]
    colour = load_medmnist(samples / "medmnist" / "bloodmnist.npz", "test").images[:4]
    g3 = to_tensor(grey, 3)
    assert g3.shape == (4, 3, 28, 28) and float(g3.max()) <= 1.0
    assert np.allclose(g3[:, 0], g3[:, 2])
    assert to_tensor(colour, 1, size=64).shape == (4, 1, 64, 64)


@pytest.fixture
def write_npz(tmp_path):
    def write(**arrays):
        path = tmp_path / "custommnist.npz"
        np.savez(path, **arrays)
        return path
    return write


def test_unknown_dataset_gets_generic_class_names(write_npz):
    path = write_npz(train_images=np.zeros((4, 32, 32), np.uint8), train_labels=np.array([[0], [1], [2], [1]]))
    s = load_medmnist(path)
    assert s.class_names == ("class 0", "class 1", "class 2")


@pytest.mark.parametrize(("arrays", "message"), [
    ({"val_images": np.zeros((2, 28, 28), np.uint8)}, "train_images"),
    ({"train_images": np.zeros((2, 28, 28), np.float32), "train_labels": np.zeros((2, 1), int)}, "uint8"),
    ({"train_images": np.zeros((2, 28), np.uint8), "train_labels": np.zeros((2, 1), int)}, "shape"),
    ({"train_images": np.zeros((2, 28, 28), np.uint8), "train_labels": np.zeros((3, 1), int)}, "3 labels for 2"),
    ({"train_images": np.zeros((2, 28, 28), np.uint8), "train_labels": np.zeros((2, 5), int)}, "multi-label"),
    ({"train_images": np.zeros((2, 28, 28), np.uint8), "train_labels": np.array([[0], [-1]])}, "item 1"),
])
def test_malformed_npz_is_named(write_npz, arrays, message):
    path = write_npz(**arrays)
    with pytest.raises(DataError, match=message) as err:
        load_medmnist(path)
    assert "custommnist.npz" in str(err.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_medmnist(tmp_path / "nope.npz")
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_medmnist(bad)
    with pytest.raises(DataError, match="unknown split"):
        load_medmnist(bad, "dev")


@pytest.mark.full_data
def test_full_files_match_the_published_counts(full_data):
    blood = load_medmnist(full_data / "medmnist" / "bloodmnist.npz", "train")
    assert len(blood) == 11959
    assert list(blood.class_counts().values()) == [852, 2181, 1085, 2026, 849, 993, 2330, 1643]
    organ = load_medmnist(full_data / "medmnist" / "organamnist.npz", "test")
    assert len(organ) == 17778 and organ.n_channels == 1
