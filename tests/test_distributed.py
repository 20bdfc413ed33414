"""train.py under torchrun on the CPU (gloo): one set of outputs, identical weights on every
process, resuming with another number of processes, and no hang when a process dies."""
import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY, WEIGHTS, assert_same_weights, make_dataset, run_script

# what the torchrun command runs
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def torchrun(n, *args, timeout=300):
    command = [*TORCHRUN, f"--nproc_per_node={n}", os.path.join(ROOT, "train.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def iterations_logged(output):
    with open(os.path.join(output, "losses.csv")) as f:
        return [int(row["iteration"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """2 epochs on 2 processes; 7 B images do not split evenly between them."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_dataset(root / "data", {"trainA": 5, "trainB": 7})
    output = root / "run"
    result = torchrun(2, "--dataroot", data, "--output", output, *TINY, "--n_epochs", "2",
                      "--log_every", "1", "--sample_every", "4")
    assert result.returncode == 0, result.stderr
    return data, output, result


def test_two_processes_share_each_epoch_and_write_one_set_of_outputs(two_process_run):
    data, output, result = two_process_run
    assert "4 iterations per epoch, 2 process(es) x batch 1 = global batch 2" in result.stdout
    # one row per iteration, not one per process
    assert iterations_logged(output) == list(range(1, 9))
    assert sorted(os.listdir(output / "samples")) == ["iter_0000004.png", "iter_0000008.png"]
    assert torch.load(output / "checkpoint.pth", weights_only=True)["iteration"] == 8
    for name in WEIGHTS:
        assert (output / name).exists()


def test_two_processes_end_with_bit_identical_weights(two_process_run):
    _, _, result = two_process_run
    # SHA-256 of every tensor compared
    assert "the 2 processes ended with identical weights" in result.stdout


def test_a_two_process_run_resumes_alone_and_then_on_two_processes_again(two_process_run, tmp_path):
    data, reference, _ = two_process_run
    output = tmp_path / "run"
    subprocess.run(["cp", "-r", str(reference), str(output)], check=True)
    alone = run_script("train.py", "--dataroot", data, "--output", output, "--resume",
                       "--n_epochs", "3")
    assert alone.returncode == 0, alone.stderr
    again = torchrun(2, "--dataroot", data, "--output", output, "--resume", "--n_epochs", "4")
    assert again.returncode == 0, again.stderr
    assert "resuming at epoch 4, iteration 15" in again.stdout
    assert iterations_logged(output) == list(range(1, 20))  # 8 on two processes, 7 alone, 4 on two


def test_one_process_under_torchrun_learns_exactly_what_a_plain_run_learns(tmp_path, single_thread):
    data = make_dataset(tmp_path / "data")
    flags = ["--dataroot", data, *TINY, "--n_epochs", "2"]
    assert torchrun(1, *flags, "--output", tmp_path / "torchrun").returncode == 0
    assert run_script("train.py", *flags, "--output", tmp_path / "plain").returncode == 0
    assert_same_weights(tmp_path / "torchrun", tmp_path / "plain")


def worker_pids(parent):
    """The train.py processes that torchrun started, by rank."""
    pids = {}
    for pid in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True,
                              text=True).stdout.split():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        ranks = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"RANK=")]
        if ranks:
            pids[int(ranks[0])] = int(pid)
    return pids


def start_long_run(tmp_path):
    """Two processes on a run of 1000 epochs of 3 iterations, once its first checkpoint is saved."""
    data = make_dataset(tmp_path / "data", {"trainA": 6, "trainB": 6})
    output = tmp_path / "run"
    command = [*TORCHRUN, "--nproc_per_node=2", os.path.join(ROOT, "train.py"),
               "--dataroot", str(data), "--output", str(output), *TINY, "--n_epochs", "1000",
               "--log_every", "1"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (output / "checkpoint.pth").exists() or len(worker_pids(run.pid)) < 2:
        if time.time() > deadline or run.poll() is not None:
            run.kill()
            pytest.fail(run.communicate()[1])
        time.sleep(0.2)
    return run, output


def test_sigterm_to_torchrun_saves_where_the_processes_stopped_together(tmp_path):
    run, output = start_long_run(tmp_path)
    try:
        run.send_signal(signal.SIGTERM)  # what a scheduler sends before a job's time runs out
        _, stderr = run.communicate(timeout=90)
    finally:
        run.kill()
    saved = re.search(r"train.py: SIGTERM: saved iteration (\d+)", stderr)
    assert saved and stderr.count("saved iteration") == 1, stderr  # rank 0 speaks for both
    assert (torch.load(output / "checkpoint.pth", weights_only=True)["iteration"]
            == int(saved.group(1)))
    assert iterations_logged(output)[-1] == int(saved.group(1))


def test_a_process_that_dies_ends_the_run_without_a_hang_and_keeps_the_checkpoint(tmp_path):
    run, output = start_long_run(tmp_path)
    try:
        os.kill(worker_pids(run.pid)[1], signal.SIGKILL)
        _, stderr = run.communicate(timeout=90)  # a hang would time out here
    finally:
        run.kill()
    assert run.returncode != 0
    assert "exitcode: -9" in stderr or "Signal 9" in stderr or "SIGKILL" in stderr, stderr
    checkpoint = torch.load(output / "checkpoint.pth", weights_only=True)
    # saved at an epoch end: 3 iterations each
    assert checkpoint["iteration"] % 3 == 0 and checkpoint["epoch"] >= 1
