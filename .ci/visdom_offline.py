"""Run by .ci/visdom_check.sh with no network but loopback, in a venv holding only visdom,
tornado and tqdm: `python -m visdom.server` starts, its page and every asset the page links
answer 200, and dashboard.Dashboard's plots, image and options arrive. Where Chromium, its
driver and selenium are installed, the page is also opened: the options pane shows its first
option without scrolling (visdom 0.3.0 opens a text pane that overflows scrolled to its end)."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402  (visdom requires numpy)
import tornado  # noqa: E402
import visdom  # noqa: E402

from dashboard import Dashboard  # noqa: E402

LOSS_NAMES = ("loss_G", "loss_D")
# As many options as train.py has, two of them long paths.
OPTIONS = {**{f"option_{i}": i * 1000 for i in range(28)},
           "dataroot": "/home/someone/datasets/" * 4, "output": "/home/someone/output/horse2zebra"}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Elements of the text pane that scroll or would need to, and its first option's name.
TEXT_PANE = r"""const pane = document.querySelector('.content-text');
    if (!pane) return null;
    const scrolling = [pane, ...pane.querySelectorAll('*')]
        .filter(e => e.scrollTop > 0 || e.scrollHeight > e.clientHeight + 1).map(e => e.className);
    return {scrolling: scrolling, first: pane.textContent.trim().split(/\s/)[0]};"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port, env_path, log):
    command = [sys.executable, "-m", "visdom.server", "-port", str(port), "-env_path", env_path]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.2)
    server.kill()
    log.seek(0)
    sys.exit("visdom_offline: visdom.server did not start; its last line: "
             f"{log.read().splitlines()[-1:]}")


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""


def check_page(base):
    code, page = status(base + "/")
    assert code == 200, f"/ answered {code}"
    assets = sorted(set(re.findall(r"""(?:src|href)=["']?(/static/[^"'\s>]+)""", page)))
    assert any("plotly" in a for a in assets), f"the page links no plotly: {assets}"
    # Resolved as a browser does: the page's ../user/style.css link becomes /user/style.css.
    codes = {asset: status(urllib.parse.urljoin(base, asset))[0] for asset in assets}
    failed = [(asset, code) for asset, code in codes.items() if code != 200]
    assert not failed, f"assets that did not answer 200: {failed}"
    return len(assets)


def check_dashboard(port):
    rows = [{"iteration": i, "epoch": 1, **{n: 1.0 / i for n in LOSS_NAMES}, "lr": 2e-4}
            for i in (1, 2, 3)]
    dashboard = Dashboard("http://localhost", port, env="check", options=OPTIONS,
                          history=lambda: rows[:2], loss_names=LOSS_NAMES)
    dashboard.plot(rows[2])
    dashboard.show(np.linspace(0, 1, 3 * 16 * 24).reshape(3, 16, 24), "a | b")
    dashboard.plot_fid({"epoch": 1, "fid_A2B": 100.0, "fid_B2A": 120.0, "mean_fid": 110.0})
    dashboard.close()
    viz = visdom.Visdom(port=port, env="check", use_incoming_socket=False)
    windows = {win: json.loads(viz.get_window_data(win, env="check"))
               for win in (*LOSS_NAMES, "lr", "fid")}
    for name in LOSS_NAMES:
        traces = windows[name]["content"]["data"]
        assert [trace["x"] for trace in traces] == [[1, 2, 3]] * 2, windows[name]
    assert windows["lr"]["content"]["data"][0]["y"] == [2e-4] * 3
    fid = [trace["y"] for trace in windows["fid"]["content"]["data"]]
    assert fid == [[100.0], [120.0], [110.0]]
    for win, kind in (("images", "image"), ("options", "text")):
        assert json.loads(viz.get_window_data(win, env="check"))["type"] == kind, win


def check_options_pane(port):
    """The options pane in headless Chromium; None where the browser or selenium is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return None
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        browser.get(f"http://localhost:{port}/env/check")
        pane = WebDriverWait(browser, 60).until(lambda b: b.execute_script(TEXT_PANE))
        time.sleep(2)  # react-scroll-to-bottom scrolls smoothly, after the first render
        pane = browser.execute_script(TEXT_PANE)
    finally:
        browser.quit()
    assert pane == {"scrolling": [], "first": "option_0"}, pane
    return True


def main():
    port = free_port()
    with tempfile.TemporaryDirectory() as env_path, tempfile.TemporaryFile("w+") as log:
        server = start_server(port, env_path, log)
        try:
            assets = check_page(f"http://localhost:{port}")
            check_dashboard(port)
            browser = check_options_pane(port)
        finally:
            server.terminate()
            server.wait(timeout=30)
    pane = ("; in Chromium, the options pane needs no scrolling" if browser
            else " (Chromium or selenium missing: the options pane was not opened)")
    print(f"visdom_check: Python {sys.version.split()[0]}, visdom {visdom.__version__}, tornado "
          f"{tornado.version}: with no network, the page and its {assets} assets answer 200, and "
          f"the dashboard's plots, image and options arrive{pane}")


if __name__ == "__main__":
    main()
