"""scripts/figures.py: README's Results figures from a run folder."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

FOLDERS = {"A": ("real_A", "A2B", "rec_A"), "B": ("real_B", "B2A", "rec_B")}


def figures(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "figures.py"),
                           *map(str, args)], capture_output=True, text=True, timeout=120)


def make_run(run, n=10):
    """A run folder whose results hold n solid-colour images per folder: image i of a folder is
    grey level 20 * i + the folder's column, so a cell of the figure tells which image it shows."""
    for folders in FOLDERS.values():
        for column, folder in enumerate(folders):
            os.makedirs(run / "results" / folder)
            for i in range(n):
                Image.new("RGB", (48, 40), (20 * i + column,) * 3).save(
                    run / "results" / folder / f"{i:02d}.png")
    with open(run / "losses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", "epoch", "loss_G", "loss_G_GAN", "loss_G_cycle",
                         "loss_G_identity", "loss_D", "lr", "seconds"])
        for i in range(1, 21):
            writer.writerow([100 * i, 1 + i // 10, 5.0, 0.8, 3.0, 1.2, 0.4, 2e-4 * (1 - i / 40),
                             30.0 * i])
    return run


def test_the_figure_shows_spread_out_test_inputs_beside_translations_and_reconstructions(tmp_path):
    run = make_run(tmp_path / "run")
    result = figures(run, "--out", tmp_path / "figs", "--cell", "32", "--images", "4")
    # 2: no matplotlib for the loss curves, checked below
    assert result.returncode in (0, 2), result.stderr
    sheet = np.asarray(Image.open(tmp_path / "figs" / "translations.jpg"), float)
    gap, header, cell = 4, 36, 32
    for panel, folders in enumerate(FOLDERS.values()):
        for column in range(3):
            x = gap + panel * (3 * (cell + gap) + gap) + column * (cell + gap) + cell // 2
            shown = [sheet[header + r * (cell + gap) + cell // 2, x, 0] for r in range(4)]
            expected = [20 * i + column for i in (1, 3, 6, 8)]  # 4 of 10, evenly spread
            np.testing.assert_allclose(shown, expected, atol=3)  # JPEG's loss


def test_the_loss_curves_are_drawn_small(tmp_path):
    pytest.importorskip("matplotlib")
    run = make_run(tmp_path / "run")
    result = figures(run, "--out", tmp_path / "figs")
    assert result.returncode == 0, result.stderr
    for name in ("translations.jpg", "losses.jpg"):
        assert 0 < os.path.getsize(tmp_path / "figs" / name) < 300_000
    with Image.open(tmp_path / "figs" / "losses.jpg") as image:
        assert image.format == "JPEG" and image.width >= 600


def test_a_run_without_results_is_one_line_saying_to_run_test_py(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    result = figures(run, "--out", tmp_path / "figs")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"figures.py: error: {run / 'results'}: no A2B/ folder; "
        "run test.py on the test sets first"]
