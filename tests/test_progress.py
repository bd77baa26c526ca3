"""Progress: a bar with rate and time left on a terminal, plain log lines elsewhere (CI, batch logs)."""

import logging

from medmeta.progress import progress


def test_plain_log_lines_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="medmeta")
    with progress("Scoring patients", 4, interval_s=0.0, force_terminal=False) as advance:
        for done in range(1, 5):
            advance(done, f"{done * 10} patients")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:4] == [f"Scoring patients: {25 * n}% {10 * n} patients" for n in range(1, 5)]
    assert lines[-1] == "Scoring patients: done 40 patients"


def test_log_lines_are_rate_limited(caplog):
    caplog.set_level(logging.INFO, logger="medmeta")
    with progress("Meta-training", 1000, interval_s=3600, force_terminal=False) as advance:
        for done in range(1, 1001):
            advance(done)
    assert [r.getMessage() for r in caplog.records] == ["Meta-training: done "]  # only the closing line


def test_a_bar_with_time_left_on_a_terminal(capsys, caplog):
    caplog.set_level(logging.INFO, logger="medmeta")
    with progress("Scoring patients", 2, force_terminal=True) as advance:
        advance(1, "5 patients, 2.0 patients/s")
        advance(2, "10 patients, 2.0 patients/s")
    out = capsys.readouterr()
    screen = out.out + out.err
    assert "Scoring patients" in screen and "100%" in screen and "10 patients, 2.0 patients/s" in screen
    assert not caplog.records  # the bar, not log lines
