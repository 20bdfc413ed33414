"""Shared test helpers: tiny generated datasets and running the scripts as a user would."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Small networks and images so that a whole training run takes seconds on a CPU.
TINY = ["--size", "32", "--ngf", "8", "--ndf", "8", "--n_blocks", "2",
        "--workers", "0", "--device", "cpu", "--no_visdom"]


def write_image(path, size=(40, 40), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)
    return path


def make_dataset(root, counts=None, size=(40, 40)):
    """trainA/trainB/testA/testB with random images; test images get varied odd sizes."""
    counts = counts or {"trainA": 5, "trainB": 7, "testA": 3, "testB": 2}
    for folder, n in counts.items():
        for i in range(n):
            image_size = size if folder.startswith("train") else (50 + i, 37 + 2 * i)
            write_image(os.path.join(root, folder, f"{folder}_{i}.png"), image_size, seed=sum(map(ord, folder)) * 100 + i)
    return str(root)


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data")


def run_script(script, *args, cwd=None, timeout=300):
    """Run train.py or test.py in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_user_error(result, *words):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
