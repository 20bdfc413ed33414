"""The dashboard as a user sees it: web assets installed by scripts/visdom_assets.sh, a real
`python -m visdom.server`, a short training run, and the page opened in headless Chromium.

Needs npm, Debian's chromium and chromium-driver, and selenium (`.ci/run` installs them);
skips, saying which is missing, where they cannot be had.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, free_port, run_script, start_visdom_server, stop
from cyclegan import LOSS_NAMES

@pytest.fixture(scope="module")
def visdom_assets():
    if not shutil.which("npm"):
        pytest.skip("npm (Node.js) is not installed, and scripts/visdom_assets.sh needs it")
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "visdom_assets.sh")],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr


TRACE_NAMES = """return Array.from(document.querySelectorAll('.js-plotly-plot'))
                        .map(plot => (plot.data || []).map(trace => trace.name));"""
# The options pane's elements that scroll or would need to: none, since visdom 0.3.0 would
# open them scrolled to the end.
OPTIONS_SCROLLING = ("""const pane = document.querySelector('.content-text');
    return [pane, ...pane.querySelectorAll('*')]"""
                     ".filter(e => e.scrollHeight > e.clientHeight + 1).length;")
GRID_IMAGES = ("""return Array.from(document.images)
                        .filter(img => img.complete"""
               " && img.naturalWidth == 104 && img.naturalHeight == 70).length;")


def test_chromium_shows_every_loss_plot_and_the_image_panel_that_training_sent(
        visdom_assets, browser, dataset, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    port = free_port()
    server = start_visdom_server(port, tmp_path / "visdom_env", module=True)
    try:
        args = [a for a in TINY if a != "--no_visdom"]
        result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "horse2zebra",
                            *args, "--n_epochs", "2", "--log_every", "1", "--sample_every", "7",
                            "--visdom_port", port)
        assert result.returncode == 0 and "warning" not in result.stderr, result.stderr

        browser.get(f"http://127.0.0.1:{port}/env/horse2zebra")
        wait = WebDriverWait(browser, 90)
        wait.until(lambda b: len(b.execute_script(TRACE_NAMES)) >= len(LOSS_NAMES) + 1)
        traces = sorted(browser.execute_script(TRACE_NAMES))
        assert traces == sorted([[name, f"{name} (smoothed)"] for name in LOSS_NAMES] + [["lr"]])
        legend = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".legendtext")}
        assert {"loss_G", "loss_D (smoothed)", "lr"} <= legend
        # the six-image grid of 32x32 samples: 3 x 32 + 4 x 2 by 2 x 32 + 3 x 2 pixels
        wait.until(lambda b: b.execute_script(GRID_IMAGES) == 1)
        assert browser.execute_script(OPTIONS_SCROLLING) == 0
        assert "<b>lambda_cycle</b> = 10.0" in browser.page_source
        browser.save_screenshot(str(tmp_path / "visdom.png"))
    finally:
        stop(server)
