"""The visdom dashboard against real visdom servers that come late, go away, come back or
never answer: training never waits for it, and the plots always show the whole run."""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import ROOT, TINY, free_port, run_script, start_visdom_server, stop
from dashboard import Dashboard, options_table
from cyclegan import LOSS_NAMES


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(Dashboard, "RETRY_SECONDS", 0.2)
    monkeypatch.setattr(Dashboard, "TIMEOUT_SECONDS", 1)


def row(iteration):
    return {"iteration": iteration, "epoch": 1, **{name: 1.0 / iteration for name in LOSS_NAMES},
            "lr": 2e-4}


class Run:
    """The rows a run has written to losses.csv, and the dashboard that plots them."""

    def __init__(self, port):
        self.rows = []
        self.dashboard = Dashboard("http://localhost", port, env="run", options={"size": 32},
                                   history=lambda: list(self.rows), loss_names=LOSS_NAMES)

    def log(self, iteration):
        self.rows.append(row(iteration))
        self.dashboard.plot(row(iteration))


def plotted(port, window="loss_G"):
    import visdom
    viz = visdom.Visdom(port=port, env="run", use_incoming_socket=False)
    return [trace["x"]
            for trace in json.loads(viz.get_window_data(window, env="run"))["content"]["data"]]


def test_a_server_started_after_training_gets_the_whole_history(tmp_path, fast_retries, capsys):
    port = free_port()
    run = Run(port)
    run.log(1)
    run.log(2)
    server = start_visdom_server(port, tmp_path / "env")
    try:
        time.sleep(0.5)
        run.log(3)
        run.dashboard.close()
        assert plotted(port) == [[1, 2, 3], [1, 2, 3]]  # raw and smoothed
        assert plotted(port, "lr") == [[1, 2, 3]]
    finally:
        stop(server)
    printed = capsys.readouterr()
    assert printed.err.count("no visdom server answers") == 1
    # it had never answered
    assert "visdom: answers at" in printed.out and "again" not in printed.out
    assert "visdom: answers" not in printed.err and "warning: visdom answers" not in printed.err



def test_the_dashboard_prints_where_the_runs_plots_are_once_and_plots_lr_on_a_log_axis(
        tmp_path, fast_retries, capsys):
    port = free_port()
    server = start_visdom_server(port, tmp_path / "env")
    try:
        run = Run(port)
        run.log(1)
        run.log(2)
        run.dashboard.close()
        import visdom
        lr = json.loads(visdom.Visdom(port=port, env="run", use_incoming_socket=False)
                        .get_window_data("lr", env="run"))
    finally:
        stop(server)
    # 2e-4 on a linear -1..1 axis reads as 0
    assert lr["content"]["layout"]["yaxis"]["type"] == "log"
    assert capsys.readouterr().out.count("visdom: this run's plots are at "
                                         f"http://localhost:{port}/env/run\n") == 1

def test_a_server_that_restarts_mid_run_gets_the_whole_history_again(tmp_path, fast_retries,
                                                                     capsys):
    port = free_port()
    server = start_visdom_server(port, tmp_path / "first")
    run = Run(port)
    run.log(1)
    time.sleep(0.5)
    stop(server)
    run.log(2)  # lost with the server
    time.sleep(0.5)
    server = start_visdom_server(port, tmp_path / "second")  # remembers nothing
    try:
        time.sleep(0.5)
        run.log(3)
        run.dashboard.close()
        assert plotted(port) == [[1, 2, 3], [1, 2, 3]]
    finally:
        stop(server)
    printed = capsys.readouterr()
    assert "visdom stopped answering" in printed.err and "visdom: answers again at" in printed.out


def test_a_server_that_never_answers_does_not_slow_training(fast_retries):
    with socket.socket() as silent:  # accepts connections, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        run = Run(silent.getsockname()[1])
        start = time.perf_counter()
        for iteration in range(1, 201):
            run.log(iteration)
        assert time.perf_counter() - start < 0.5
        start = time.perf_counter()
        run.dashboard.close()
        assert time.perf_counter() - start < Dashboard.TIMEOUT_SECONDS + 2


def test_a_resumed_run_shows_the_whole_run_on_a_server_that_lost_it(dataset, tmp_path):
    args = [a for a in TINY if a != "--no_visdom"]
    output = tmp_path / "run"
    for epochs, env in (("1", "first"), ("2", "second")):  # the second server starts empty
        port = free_port()
        server = start_visdom_server(port, tmp_path / env)
        try:
            resume = ["--resume"] if epochs == "2" else []
            result = run_script("train.py", "--dataroot", dataset, "--output", output, *args,
                                *resume, "--n_epochs", epochs, "--log_every", "2",
                                "--visdom_port", port)
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stderr
            import visdom
            windows = json.loads(visdom.Visdom(port=port, use_incoming_socket=False)
                                 .get_window_data(env="run"))
        finally:
            stop(server)
    assert windows["loss_G"]["content"]["data"][0]["x"] == [2, 4, 6, 8, 10, 12, 14]


def run_assets_script(**env):
    script = os.path.join(ROOT, "scripts", "visdom_assets.sh")
    return subprocess.run(["/bin/bash", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_the_assets_script_without_npm_says_so_in_one_line(tmp_path):
    result = run_assets_script(PATH=str(tmp_path))  # an empty folder: no npm, no python
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "npm not found" in result.stderr


@pytest.mark.skipif(not shutil.which("npm"), reason="npm is not installed")
def test_the_assets_script_without_visdom_says_so_in_one_line(tmp_path):
    no_visdom = tmp_path / "python"
    no_visdom.write_text("#!/bin/sh\nexit 1\n")
    no_visdom.chmod(0o755)
    result = run_assets_script(PYTHON=str(no_visdom))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "visdom is not installed" in result.stderr



@pytest.mark.skipif(not shutil.which("npm"), reason="npm is not installed")
def test_the_assets_script_refuses_a_visdom_release_whose_files_it_does_not_know(tmp_path):
    future = tmp_path / "visdom"
    (future / "static").mkdir(parents=True)
    (future / "__init__.py").write_text("__version__ = '0.9.0'\n")
    result = run_assets_script(PYTHONPATH=str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "visdom 0.9.0 is installed" in result.stderr and "0.2.4 and 0.3.0" in result.stderr
    assert os.listdir(future / "static") == []

def test_a_new_run_replaces_the_plots_of_an_older_run_with_the_same_name(tmp_path, fast_retries):
    port = free_port()
    server = start_visdom_server(port, tmp_path / "env")
    try:
        old = Run(port)
        for iteration in (1, 2, 3):
            old.log(iteration)
        old.dashboard.close()
        new = Run(port)  # same environment name, empty history
        new.log(1)
        new.dashboard.close()
        assert plotted(port) == [[1], [1]]
    finally:
        stop(server)


def test_the_options_table_shows_every_option_with_its_value_escaped():
    table, _ = options_table({"lambda_cycle": 10.0, "inception": None, "output": "runs/<a&b>"})
    assert "<b>lambda_cycle</b> = 10.0" in table and "<b>inception</b> = null" in table
    assert "<b>output</b> = &quot;runs/&lt;a&amp;b&gt;&quot;" in table


def test_the_options_pane_is_sized_for_its_rows_and_its_wrapped_long_values():
    _, three = options_table({f"option_{i}": i for i in range(3)})  # one row
    _, four = options_table({f"option_{i}": i for i in range(4)})  # two rows
    _, wrapped = options_table({"option_0": 0, "dataroot": "/data/" * 40})  # a long value wraps
    assert four["height"] > three["height"] and wrapped["height"] > four["height"]
    assert wrapped["width"] == three["width"]

