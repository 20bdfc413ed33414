"""train.py's own visdom server: started in the background when nothing answers on
--visdom_port, left running after training, reused by the next run; a port held by something
else is one line, and training goes on."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import dashboard
from conftest import ROOT, TINY, free_port
from cyclegan import LOSS_NAMES
from dashboard import ensure_server, what_answers


@pytest.fixture
def visdom_page(file_server):
    file_server.files["/"] = b"<html><head><title>visdom</title></head></html>"
    return file_server


def port_of(server):
    return int(server.url.rsplit(":", 1)[1])


def window_names(port, env):
    import visdom
    viz = visdom.Visdom(port=port, env=env, use_incoming_socket=False, raise_exceptions=True)
    return set(json.loads(viz.get_window_data(env=env) or "{}"))


def test_a_free_port_is_nothing_a_web_page_is_other_and_visdoms_page_is_visdom(visdom_page,
                                                                              file_server):
    assert what_answers("http://localhost", free_port()) == "nothing"
    assert what_answers("http://127.0.0.1", port_of(visdom_page)) == "visdom"
    file_server.files["/"] = b"<html><title>Jupyter</title></html>"
    assert what_answers("http://127.0.0.1", port_of(file_server)) == "other"


def test_a_port_held_by_something_else_is_one_line_and_no_dashboard(file_server, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(dashboard, "_start_server", lambda *a: pytest.fail("started a server"))
    server = ensure_server("http://127.0.0.1", port_of(file_server), "unused.log")
    assert not server.answers
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "answers, but not as visdom" in err[0] and "--visdom_port" in err[0]


def test_a_visdom_server_already_there_is_used_and_none_is_started(visdom_page, monkeypatch):
    monkeypatch.setattr(dashboard, "_start_server", lambda *a: pytest.fail("started a server"))
    server = ensure_server("http://127.0.0.1", port_of(visdom_page), "unused.log")
    assert server.answers and server.pid is None


def test_a_server_on_another_machine_is_never_started(monkeypatch):
    monkeypatch.setattr(dashboard, "_start_server", lambda *a: pytest.fail("started a server"))
    assert ensure_server("http://visdom.example", free_port(), "unused.log").answers


def test_without_web_assets_they_are_installed_from_npm_and_the_server_started_again(
        monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(dashboard, "_start_server",
                        lambda *a: calls.append("start") or (4321 if "assets" in calls else None))
    monkeypatch.setattr(dashboard, "_install_assets", lambda log: calls.append("assets") or True)
    monkeypatch.setattr(dashboard, "_assets_built", lambda: False)
    monkeypatch.setattr(dashboard.shutil, "which", lambda name: f"/usr/bin/{name}")
    server = ensure_server("http://localhost", free_port(), "server.log")
    assert calls == ["start", "assets", "start"]
    assert server.answers and server.pid == 4321
    assert "stop it with `kill 4321`" in capsys.readouterr().out


def test_a_server_that_cannot_start_is_one_warning_naming_its_log_and_the_assets_script(
        monkeypatch, capsys):
    monkeypatch.setattr(dashboard, "_start_server", lambda *a: None)
    monkeypatch.setattr(dashboard.shutil, "which", lambda name: None)  # no npm
    server = ensure_server("http://localhost", free_port(), "run/visdom_server.log")
    assert not server.answers
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "run/visdom_server.log" in err[0] and "scripts/visdom_assets.sh" in err[0]


def test_train_py_starts_a_server_plots_on_it_while_training_and_leaves_it_running(
        dataset, tmp_path):
    port, env = free_port(), "started_here"
    args = [a for a in TINY if a != "--no_visdom"]
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--dataroot", dataset,
               "--output", str(tmp_path / env), *args, "--n_epochs", "1000", "--log_every", "1",
               "--visdom_port", str(port)]
    # HOME: visdom keeps its environments in ~/.visdom
    train = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env={**os.environ, "HOME": str(tmp_path)})
    pid = None
    try:
        for line in train.stdout:
            if "did not start" in line:
                pytest.skip("visdom could not get its web assets: needs internet, or npm "
                            "(Node.js) for scripts/visdom_assets.sh")
            if started := re.search(r"server started \(pid (\d+)\)", line):
                pid = int(started.group(1))
                break
        assert pid, "train.py did not start a visdom server"
        deadline = time.monotonic() + 120
        while window_names(port, env) < {*LOSS_NAMES, "lr", "options"}:
            assert train.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        train.send_signal(signal.SIGTERM)  # saves and stops
        out, _ = train.communicate(timeout=120)
        assert train.returncode == 143, out
        assert f"the server keeps running: stop it with `kill {pid}`" in out
        assert what_answers("http://localhost", port) == "visdom"
    finally:
        train.kill()
        if pid:
            os.kill(pid, signal.SIGTERM)
