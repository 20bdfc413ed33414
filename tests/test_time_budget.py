"""train.py --time_budget: a run of a given length, whatever number of epochs fits, with the
rate constant for the first half and falling to zero at the end, which ends with its
checkpoint at the budget and goes on within it after --resume."""
import csv
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, assert_user_error, make_dataset, run_script
from test_robustness import wait_for
from utils import (COMPILE_MIN_SECONDS, budget_lr_factor, parse_duration, use_compile)

LR = 2e-4
# The clock is read every 10 iterations (READ_EVERY), which take well under a second here, a
# few times longer on a loaded machine.
READ_SLACK = 2.5


def rows(output):
    with open(os.path.join(output, "losses.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def training_seconds(output):
    return torch.load(os.path.join(output, "checkpoint.pth"), weights_only=True)["seconds"]


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "data", {"trainA": 6, "trainB": 6})


def test_durations_read_as_hours_minutes_and_seconds():
    assert [parse_duration(t) for t in ("1h", "90m", "1h30m", "45s", "3600", "0.5h")] == [
        3600, 5400, 5400, 45, 3600, 1800]


def test_the_rate_is_full_for_the_first_half_of_the_budget_then_falls_to_zero_at_its_end():
    assert [budget_lr_factor(s, 3600) for s in (0, 1800, 2700, 3600, 4000)] == [1, 1, 0.5, 0, 0]


def test_a_time_budget_ends_a_run_on_time_with_its_checkpoint(data, tmp_path):
    output = tmp_path / "run"
    result = run_script("train.py", "--dataroot", data, "--output", output, *TINY,
                        "--time_budget", "6s", "--log_every", "1")
    assert result.returncode == 0, result.stderr
    assert "done after the time budget of 0:00:06, in epoch" in result.stdout
    assert 6 <= training_seconds(output) <= 6 + READ_SLACK
    assert os.path.exists(output / "netG_A2B.pth")
    log = rows(output)
    assert log[-1]["iteration"] > 2 * 6  # several epochs of 6 iterations fitted


def test_the_logged_rate_follows_the_clock(data, tmp_path):
    output = tmp_path / "run"
    result = run_script("train.py", "--dataroot", data, "--output", output, *TINY,
                        "--time_budget", "6s", "--log_every", "1")
    assert result.returncode == 0, result.stderr
    log = rows(output)
    # The rate was set at the last reading of the clock, at most a second before the row's
    # time (which losses.csv keeps in milliseconds, and the rate to 6 significant digits).
    for row in log:
        assert (LR * budget_lr_factor(row["seconds"] + 0.001, 6) * (1 - 1e-5) <= row["lr"]
                <= LR * budget_lr_factor(row["seconds"] - READ_SLACK, 6) * (1 + 1e-5))
    assert [row["lr"] for row in log] == sorted((row["lr"] for row in log), reverse=True)
    assert log[0]["lr"] == LR and log[-1]["lr"] < 0.2 * LR


def test_resume_goes_on_within_the_budget(data, tmp_path):
    output = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "--dataroot", data,
                             "--output", str(output), *TINY, "--time_budget", "8s",
                             "--log_every", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = output / "losses.csv"
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) > 1
             and rows(output)[-1]["seconds"] >= 2, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    stopped = training_seconds(output)
    assert stopped < 8
    result = run_script("train.py", "--dataroot", data, "--output", output, "--resume")
    assert result.returncode == 0, result.stderr
    assert "done after the time budget of 0:00:08" in result.stdout
    assert 8 <= training_seconds(output) <= 8 + READ_SLACK
    resumed = [row for row in rows(output) if row["seconds"] > stopped]
    assert resumed and all(row["lr"] <= LR * budget_lr_factor(row["seconds"] - READ_SLACK, 8)
                           * (1 + 1e-5) for row in resumed)


@pytest.mark.parametrize("flags,words", [
    (["--time_budget", "1x"], ["--time_budget", "not a duration"]),
    (["--time_budget", "0"], ["--time_budget", "more than 0 seconds"]),
    (["--time_budget", "1h", "--lr_policy", "step"], ["its own schedule", "drop --lr_policy"]),
])
def test_a_bad_time_budget_is_one_line(data, tmp_path, flags, words):
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", *TINY,
                        *flags)
    assert_user_error(result, *words)


def test_auto_compiles_a_time_budget_only_long_enough_to_repay_it():
    cpu = torch.device("cpu")
    mode, note = use_compile("auto", cpu, 0, seconds=3600)
    assert mode is None and "60 minutes of time budget are too few" in note
    assert use_compile("auto", cpu, 0, seconds=COMPILE_MIN_SECONDS) == ("default", None)
