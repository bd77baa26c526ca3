import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from medmeta import memory as memory_module
from medmeta.errors import DataError
from medmeta.learners import MatchingNetwork, PrototypicalNetwork
from medmeta.memory import MemoryStoreError, SupportMemory, fingerprint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(seed: int, n: int, level: int, size: int = 28, colour: bool = False) -> np.ndarray:
    """Images of one synthetic 'class': a bright square at a class-specific place, with noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, size, size), dtype=np.uint8)
    x[:, level:level + 8, level:level + 8] = 220
    return np.repeat(x[..., None], 3, -1) if colour else x


@pytest.fixture(params=[PrototypicalNetwork, MatchingNetwork])
def learner(request):
    return request.param(in_channels=1, hidden=16, distance="cosine") if request.param is PrototypicalNetwork \
        else request.param(in_channels=1, hidden=16)


def test_a_new_class_is_used_by_the_very_next_prediction(tmp_path, learner):
    memory = SupportMemory(tmp_path / "mem", learner)
    assert memory.version == 0 and len(memory) == 0
    memory.add(blobs(0, 5, 2), "left", [f"left-{i}.png" for i in range(5)])
    memory.add(blobs(1, 5, 18), "right")
    query = blobs(2, 3, 18)
    before = memory.predict(query, top_k=3)
    assert all(set(p.probabilities) == {"left", "right"} for p in before)

    v = memory.add(blobs(3, 4, 10), "middle", note="new finding")
    assert v == 3 and memory.version == 3
    after = memory.predict(blobs(4, 2, 10), top_k=4)
    for p in after:
        assert set(p.probabilities) == {"left", "middle", "right"}
        assert np.isclose(sum(p.probabilities.values()), 1, atol=1e-5)
        assert p.predicted == max(p.probabilities, key=p.probabilities.get)
        assert p.memory_version == 3 and p.encoder == fingerprint(learner)
        assert len(p.evidence) == 4
        sims = [e.similarity for e in p.evidence]
        assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
        assert p.evidence[0].label == "middle"  # its nearest stored case is one of the new class
    assert "clinician" in after[0].disclaimer
    json.dumps(after[0].to_dict())  # serialisable for the dashboard and batch jobs


def test_evidence_names_the_stored_case(tmp_path, learner):
    memory = SupportMemory(tmp_path, learner)
    stored = blobs(0, 3, 2)
    memory.add(stored, "left", ["a.png", "b.png", "c.png"])
    memory.add(blobs(1, 3, 18), "right")
    top = memory.predict(stored[1:2], top_k=1)[0].evidence[0]
    assert (top.source_id, top.label) == ("b.png", "left")
    assert top.similarity == pytest.approx(1, abs=1e-5)
    assert np.array_equal(memory.images([top.case_id])[0], stored[1])


def test_memory_survives_a_restart_and_keeps_every_version(tmp_path):
    learner = PrototypicalNetwork(in_channels=3, hidden=16)
    first = SupportMemory(tmp_path, learner)
    first.add(blobs(0, 4, 2, colour=True), "left")
    first.add(blobs(1, 4, 18, size=40), "right")  # grey, another size: converted like any input
    first.add(blobs(2, 4, 10), "middle")
    first.remove(label="left", note="mislabelled")
    query = blobs(5, 2, 10)
    expected = first.predict(query)

    reopened = SupportMemory(tmp_path, PrototypicalNetwork(in_channels=3, hidden=16))  # same seed, same weights
    assert reopened.version == 4 and reopened.classes == {"middle": 4, "right": 4}
    for got, want in zip(reopened.predict(query), expected, strict=True):
        assert got.probabilities.keys() == want.probabilities.keys() == {"middle", "right"}
        assert np.allclose(list(got.probabilities.values()), list(want.probabilities.values()), atol=1e-5)
    assert [h["change"]["op"] for h in reopened.history()] == ["create", "add", "add", "add", "remove"]

    old = SupportMemory(tmp_path, learner, version=3)
    assert old.classes == {"left": 4, "middle": 4, "right": 4}
    with pytest.raises(MemoryStoreError, match="read-only"):
        old.add(blobs(0, 1, 2), "x")
    with pytest.raises(MemoryStoreError, match="no version 9"):
        SupportMemory(tmp_path, learner, version=9)


def test_embeddings_follow_the_encoder(tmp_path):
    a, b = PrototypicalNetwork(in_channels=1, hidden=16, seed=0), PrototypicalNetwork(in_channels=1, hidden=16, seed=1)
    assert fingerprint(a) != fingerprint(b)
    SupportMemory(tmp_path, a).add(blobs(0, 3, 2), "left")
    memory_b = SupportMemory(tmp_path, b)
    memory_b.add(blobs(1, 3, 18), "right")
    query = blobs(0, 1, 2)
    top = memory_b.predict(query, top_k=1)[0].evidence[0]
    # b embedded both segments itself, a's embeddings are kept for a; the evidence uses b's
    assert {p.name for p in (tmp_path / "embeddings").iterdir()} == {fingerprint(a), fingerprint(b)}
    assert len(list((tmp_path / "embeddings" / fingerprint(b)).iterdir())) == 2
    z = torch.nn.functional.normalize(b.embed_images(torch.as_tensor(query[:, None] / 255, dtype=torch.float32)))
    stored = torch.nn.functional.normalize(b.embed_images(torch.as_tensor(blobs(0, 3, 2)[:, None] / 255,
                                                                          dtype=torch.float32)))
    assert top.similarity == pytest.approx(float((z @ stored.T).max()), abs=1e-4)


def test_a_crash_between_steps_leaves_the_last_version_intact(tmp_path, monkeypatch):
    learner = PrototypicalNetwork(in_channels=1, hidden=16)
    memory = SupportMemory(tmp_path, learner)
    memory.add(blobs(0, 3, 2), "left")
    memory.add(blobs(1, 3, 18), "right")
    real = memory_module.atomic_write

    for step in ("segments", "versions", "CURRENT"):  # die just before each step of an update
        def crash(path, data, step=step):
            if step in (path.parent.name, path.name):
                raise KeyboardInterrupt(f"simulated crash before writing {path.name}")
            real(path, data)

        monkeypatch.setattr(memory_module, "atomic_write", crash)
        with pytest.raises(KeyboardInterrupt):
            memory.add(blobs(2, 3, 10), "middle")
        monkeypatch.setattr(memory_module, "atomic_write", real)
        reopened = SupportMemory(tmp_path, learner)
        assert reopened.version == 2 and reopened.classes == {"left": 3, "right": 3}
        assert reopened.predict(blobs(3, 1, 2))[0].predicted == "left"

    assert memory.add(blobs(2, 3, 10), "middle") == 3  # and the next update goes through
    assert SupportMemory(tmp_path, learner).classes == {"left": 3, "middle": 3, "right": 3}


def test_an_interrupted_file_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "CURRENT"
    memory_module.atomic_write(target, b"1\n")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(memory_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        memory_module.atomic_write(target, b"2\n")
    assert target.read_bytes() == b"1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]  # the temporary file is gone


WRITER = """
import sys, numpy as np
from medmeta.learners import PrototypicalNetwork
from medmeta.memory import SupportMemory

memory = SupportMemory(sys.argv[1], PrototypicalNetwork(in_channels=1, hidden=8))
rng = np.random.default_rng(int(sys.argv[2]))
while True:
    memory.add(rng.integers(0, 255, (200, 28, 28), dtype=np.uint8), f"class {rng.integers(3)}")
"""


def test_a_writer_killed_mid_update_cannot_corrupt_the_memory(tmp_path):
    learner = PrototypicalNetwork(in_channels=1, hidden=8)
    committed = 0
    for attempt in range(2):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(attempt)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while SupportMemory(tmp_path, learner).version <= committed and time.monotonic() < deadline:
            assert writer.poll() is None, writer.stderr.read().decode()
            time.sleep(0.05)
        time.sleep(0.05 + 0.1 * attempt)  # let it get into the middle of a later update
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        memory = SupportMemory(tmp_path, learner)  # verifies every segment's SHA-256 on reading
        assert memory.version > committed
        assert len(memory) == 200 * memory.version
        committed = memory.version
    assert memory.add(blobs(0, 2, 2), "left") == committed + 1


def test_a_damaged_segment_is_reported(tmp_path):
    learner = PrototypicalNetwork(in_channels=1, hidden=8)
    SupportMemory(tmp_path, learner).add(blobs(0, 3, 2), "left")
    segment = next((tmp_path / "segments").iterdir())
    segment.write_bytes(segment.read_bytes()[:-10])
    with pytest.raises(MemoryStoreError, match="SHA-256"):
        len(SupportMemory(tmp_path, learner))


def test_large_memories_use_the_index_and_agree_with_brute_force(tmp_path, monkeypatch):
    learner = PrototypicalNetwork(in_channels=1, hidden=16)
    memory = SupportMemory(tmp_path, learner)
    rng = np.random.default_rng(0)
    memory.add(rng.integers(0, 255, (60, 28, 28), dtype=np.uint8), "a")
    memory.add(rng.integers(0, 255, (60, 28, 28), dtype=np.uint8), "b")
    query = rng.integers(0, 255, (4, 28, 28), dtype=np.uint8)
    brute = memory.predict(query, top_k=5)
    monkeypatch.setattr(memory_module, "INDEX_THRESHOLD", 10)
    indexed = SupportMemory(tmp_path, learner)
    with_index = indexed.predict(query, top_k=5)
    assert indexed._state.index is not None
    for a, b in zip(brute, with_index, strict=True):
        assert [e.case_id for e in a.evidence] == [e.case_id for e in b.evidence]
        assert np.allclose([e.similarity for e in a.evidence], [e.similarity for e in b.evidence], atol=1e-5)


def test_bad_input_is_refused_with_reasons(tmp_path):
    memory = SupportMemory(tmp_path, PrototypicalNetwork(in_channels=1, hidden=8))
    with pytest.raises(DataError, match="uint8"):
        memory.add(np.zeros((2, 28, 28), np.float32), "a")
    with pytest.raises(DataError, match="empty class label"):
        memory.add(blobs(0, 2, 2), " ")
    with pytest.raises(DataError, match="2 source ids for 3 images"):
        memory.add(blobs(0, 3, 2), "a", ["x", "y"])
    memory.add(blobs(0, 2, 2), "a")
    with pytest.raises(MemoryStoreError, match="at least two classes"):
        memory.predict(blobs(0, 1, 2))
    with pytest.raises(MemoryStoreError, match="unknown cases"):
        memory.remove(["nope"])
