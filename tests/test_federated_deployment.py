"""Federated training as real Flower processes on 127.0.0.1: a SuperLink, one SuperNode per CGM subject and
``flwr run`` with medmeta's Flower App; one SuperNode is killed while the round is under way, and the round
ends without it when its time is up (``round-timeout``)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medmeta.paths import CGM_HALL_CSV

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'medmeta[federated]'")

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A process in its own group, so that it can be stopped with the processes it starts."""
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the SuperLink exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the SuperLink did not open port {port}")


# about a minute, mostly waiting (process start-up and the 30 s round timeout): in the default run
def test_real_processes_finish_a_round_whose_client_was_killed(samples, tmp_path):
    from medmeta.federated import FLOWER_APP
    from medmeta.treatment.glucose import GlucoseForecaster

    port, out = _free_port(), tmp_path / "model"
    home = tmp_path / "flwr"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n\n[superlink.test]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    processes = [_start([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
                         "--disable-runtime-dependency-installation"], tmp_path / "superlink.log", env)]
    lines: queue.Queue[str] = queue.Queue()
    try:
        _wait_for_port(port, processes[0])
        for i in range(3):  # one SuperNode per subject, each reading only its partition of the file
            processes.append(_start([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                                     "--port", str(_free_port()), "--node-config",
                                     f'data-path="{samples / CGM_HALL_CSV}" partition-id={i}'],
                                    tmp_path / f"supernode{i}.log", env))
        run = subprocess.Popen([str(BIN / "flwr"), "run", str(FLOWER_APP), "test", "--stream", "--run-config",
                                f'task="cgm" output="{out}" rounds=1 local-steps=2 min-clients=3 round-timeout=30'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
        processes.append(run)
        threading.Thread(target=lambda: [lines.put(line) for line in run.stdout], daemon=True).start()
        log, killed, deadline = [], False, time.monotonic() + 300
        while run.poll() is None or not lines.empty():
            assert time.monotonic() < deadline, "the federated run did not finish:\n" + "".join(log[-40:])
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            log.append(line)
            if "[ROUND 1/1]" in line and not killed:
                _stop(processes[3], signal.SIGKILL)  # the third client's device dies during the round
                killed = True
    finally:
        for proc in reversed(processes):
            _stop(proc)
    assert killed, "".join(log[-40:])
    assert (out / "config.json").is_file(), "".join(log[-40:])
    report = json.loads((out / "config.json").read_text())["federated"]
    assert report["statistics"]["replied"] == 3
    (only,) = report["rounds"]
    assert (only["asked"], only["replied"]) == (3, 2)  # the round finished without the killed client
    assert GlucoseForecaster.load(out).training_["subjects"] == 3
