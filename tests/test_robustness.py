"""Messy data, kills, signals, NaNs, full disks and untrusted files: nothing is lost and
nothing runs that should not."""
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (ROOT, TINY, WEIGHTS, assert_same_weights, assert_user_error, make_dataset,
                      one_cpu_thread, photo_folder, run_script, save_generator, write_image)
from datasets import UnalignedDataset, check_image, list_images



def jpeg_bytes(size=(64, 48), **save_options):
    x = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", **save_options)
    return buf.getvalue()


def make_messy_folder(folder):
    """Every kind of file found in real image folders; returns (usable names, skipped names)."""
    os.makedirs(folder)
    usable = {
        "good.png": lambda p: write_image(p),
        "gray.png": lambda p: write_image(p, mode="L"),
        "rgba.png": lambda p: write_image(p, mode="RGBA"),
        "palette.png": lambda p: write_image(p, mode="P"),
        "deep.png": lambda p: Image.fromarray(
            np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)).save(p),
        "cmyk.jpg": lambda p: write_image(p, mode="CMYK"),
        "rotated.jpg": lambda p: open(p, "wb").write(jpeg_bytes(exif=_orientation(6))),
        "tiny.png": lambda p: write_image(p, size=(5, 3)),
        "huge.jpg": lambda p: open(p, "wb").write(jpeg_bytes(size=(4000, 3000))),
        "motion_photo.jpg": lambda p: open(p, "wb").write(jpeg_bytes() + b"\0ftypmp42" * 300),
    }
    skipped = {
        "notes.txt": lambda p: open(p, "w").write("hello"),
        ".DS_Store": lambda p: open(p, "wb").write(b"\0\0\0\1Bud1"),
        "subfolder": lambda p: os.makedirs(p),
        "empty.jpg": lambda p: open(p, "wb").close(),
        "truncated.jpg": lambda p: open(p, "wb").write(jpeg_bytes()[:-300]),
        "truncated.png": lambda p: open(p, "wb").write(_png_bytes()[:-40]),
        "random.jpg": lambda p: open(p, "wb").write(np.random.default_rng(0).bytes(5000)),
        "dangling_link.jpg": lambda p: os.symlink(p + ".gone", p),
    }
    for name, make in {**usable, **skipped}.items():
        make(os.path.join(folder, name))
    return sorted(usable), sorted(skipped)


def _orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def _png_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3),
                                                      dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_messy_folder_keeps_every_readable_image_and_names_each_skipped_one(tmp_path):
    usable, skipped = make_messy_folder(str(tmp_path / "trainA"))
    paths, rejects = list_images(str(tmp_path / "trainA"))
    assert sorted(os.path.basename(p) for p in paths) == usable
    assert sorted(os.path.basename(p) for p, _ in rejects) == skipped
    reasons = {os.path.basename(p): r for p, r in rejects}
    assert reasons["empty.jpg"] == "empty file" and reasons["subfolder"] == "a folder"
    assert ("truncated" in reasons["truncated.jpg"].lower()
            and "not a readable image" in reasons["random.jpg"])


def test_training_on_a_messy_folder_starts_and_lists_skipped_files_once(tmp_path):
    data = make_dataset(tmp_path / "data", {"trainB": 3})
    usable, skipped = make_messy_folder(os.path.join(data, "trainA"))
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", *TINY,
                        "--n_epochs", "1")
    assert result.returncode == 0, result.stderr
    assert f"{len(usable)} A and 3 B images" in result.stdout
    listed = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert sorted(line.split()[1].split(os.sep)[-1].rstrip(":") for line in listed) == skipped
    assert "warning" not in result.stderr


def test_a_file_that_breaks_during_training_is_skipped_with_one_warning(tmp_path, capsys):
    paths = [write_image(str(tmp_path / f"{i}.png"), seed=i) for i in range(3)]
    dataset = UnalignedDataset(paths, paths, load_size=36, size=32)
    open(paths[1], "wb").write(b"broken now")
    for seed in range(4):
        sample = dataset[(1, 1, seed)]
        assert sample["A"].shape == (3, 32, 32) and sample["B"].shape == (3, 32, 32)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "1.png" in warnings[0]


def test_a_domain_with_no_usable_image_is_a_user_error(tmp_path):
    data = make_dataset(tmp_path / "data", {"trainA": 2})
    os.makedirs(os.path.join(data, "trainB"))
    open(os.path.join(data, "trainB", "broken.jpg"), "wb").write(b"nope")
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", *TINY)
    assert_user_error(result, "trainB: no usable images",
                      "skipped 1: broken.jpg: not a readable image")


def test_check_image_accepts_a_jpeg_with_data_after_its_end_marker(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg_bytes() + b"trailer" * 100)
    assert check_image(str(path)) is None


def test_test_py_translates_the_readable_images_and_lists_the_rest(tmp_path):
    folder = tmp_path / "photos"
    usable, skipped = make_messy_folder(str(folder))
    # translating 12 megapixels on a CPU is slow; the loader test covers it
    os.remove(folder / "huge.jpg")
    usable.remove("huge.jpg")
    result = run_script("test.py", "--input", folder,
                        "--weights", save_generator(tmp_path / "g.pth", 4, 1),
                        "--results", tmp_path / "res", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert (sorted(os.listdir(tmp_path / "res" / "A2B"))
            == sorted(n.rsplit(".", 1)[0] + ".png" for n in usable))
    assert len([line for line in result.stderr.splitlines()
                if line.startswith("skipped ")]) == len(skipped)


# Crashes and kills --------------------------------------------------------------------

RUN = ["--n_epochs", "2", "--save_every", "3", "--pool_size", "3", "--log_every", "1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A dataset and the output of a run of it that nothing interrupted."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = make_dataset(root / "data", {"trainA": 10, "trainB": 8})
    with one_cpu_thread():
        result = run_script("train.py", "--dataroot", data, "--output", root / "run", *TINY, *RUN)
    assert result.returncode == 0, result.stderr
    return data, str(root / "run")


def start_training(data, output, *extra):
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--dataroot", data,
               "--output", str(output), *TINY, *RUN, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "training ended before the event: " + proc.stderr.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.001)


def assert_resumes_to(data, output, reference):
    result = run_script("train.py", "--dataroot", data, "--output", output, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_weights(output, reference)


# train.py, with torch.save pausing inside the second write of checkpoint.pth: some bytes of
# it are on disk, a marker file says so, and the writer waits to be killed. The kill then
# lands inside a write every time, however loaded the machine is.
PAUSED_WRITER = """
import os, runpy, sys, time
import torch
marker, sys.argv = sys.argv[1], sys.argv[2:]
save = torch.save

def save_or_pause(obj, f, *args, **kwargs):
    name = str(getattr(f, "name", ""))
    if name.endswith("checkpoint.pth.tmp") and os.path.exists(name.removesuffix(".tmp")):
        f.write(b"the first bytes")
        f.flush()
        open(marker, "w").close()
        time.sleep(600)
    return save(obj, f, *args, **kwargs)

torch.save = save_or_pause
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigkill_while_the_checkpoint_is_being_written_loses_at_most_one_save_interval(
        uninterrupted, tmp_path, single_thread):
    data, reference = uninterrupted
    output, paused = tmp_path / "run", tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_WRITER, str(paused),
                             os.path.join(ROOT, "train.py"), "--dataroot", data,
                             "--output", str(output), *TINY, *RUN],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(paused.exists, proc)
    proc.kill()
    proc.wait()
    # the kill cut a write short
    assert (output / "checkpoint.pth.tmp").read_bytes() == b"the first bytes"
    # the previous one, complete
    checkpoint = torch.load(output / "checkpoint.pth", weights_only=True)
    assert checkpoint["iteration"] == 3
    assert_resumes_to(data, output, reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_save_the_current_iteration_then_exit_cleanly(uninterrupted, tmp_path,
                                                                         signum, single_thread):
    data, reference = uninterrupted
    output = tmp_path / "run"
    proc = start_training(data, output, "--save_every", "1000")
    log = output / "losses.csv"
    # at iteration 2 or later
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert "Traceback" not in stderr and "continue with --resume" in stderr
    checkpoint = torch.load(output / "checkpoint.pth", weights_only=True)
    logged = int(log.read_text().splitlines()[-1].split(",")[0])
    assert checkpoint["iteration"] == logged >= 2  # saved where it stopped, not at a save interval
    shown = re.findall(r"\| (\d+)/\d+ \[", stderr)[-1]  # the progress bar's last count in the epoch
    assert (int(shown) == checkpoint["pairs"]
            and f"saved iteration {checkpoint['iteration']} " in stderr)
    assert_resumes_to(data, output, reference)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_into_non_finite_losses(data, reference, output, *extra):
    shutil.copytree(reference, output)
    before = {name: sha256(output / name) for name in ("checkpoint.pth", *WEIGHTS)}
    result = run_script("train.py", "--dataroot", data, "--output", output, "--resume",
                        "--n_epochs", "3", "--lr", "1e12", "--save_every", "1000", *extra)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert {name: sha256(output / name) for name in before} == before
    return result.stderr.strip().splitlines()[-1]


def test_a_non_finite_loss_stops_with_its_iteration_and_keeps_the_last_good_checkpoint(
        uninterrupted, tmp_path):
    # --log_every 1: read every step
    message = run_into_non_finite_losses(*uninterrupted, tmp_path / "run")
    assert re.search(r"loss_\w+ became (nan|-?inf) at iteration (2\d|30) \(epoch 3\)",
                     message), message


def test_losses_read_every_ten_iterations_still_stop_a_non_finite_run_before_saving(uninterrupted,
                                                                                    tmp_path):
    message = run_into_non_finite_losses(*uninterrupted, tmp_path / "run", "--log_every", "1000")
    assert re.search(r"loss_\w+ became (nan|-?inf) between iterations 21 and 30 \(epoch 3\)",
                     message), message


def test_weights_that_became_non_finite_are_never_saved(uninterrupted, tmp_path):
    from cyclegan import CycleGAN
    from train import Launch, Position, save_run
    from utils import RunFailure
    data, reference = uninterrupted
    model = CycleGAN(ngf=8, ndf=8, n_blocks=2)
    with torch.no_grad():
        model.D_B.model[0].weight[0, 0, 0, 0] = float("inf")
    args = type("Args", (), {"output": str(tmp_path)})()
    with pytest.raises(RunFailure, match="D_B has non-finite weights at iteration 7"):
        save_run(model, args, Launch("cpu"), Position(epoch=0, pairs=7, iteration=7, seconds=1.0))
    assert os.listdir(tmp_path) == []


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays_intact(uninterrupted,
                                                                               tiny_disk):
    data, reference = uninterrupted
    output = tiny_disk / "run"
    shutil.copytree(reference, output)
    before = sha256(output / "checkpoint.pth")
    with open(tiny_disk / "filler", "wb") as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    result = run_script("train.py", "--dataroot", data, "--output", output, "--resume",
                        "--n_epochs", "3")
    assert result.returncode in (1, 2)
    message = result.stderr.strip().splitlines()[-1]
    assert "No space left on device" in message and "Traceback" not in result.stderr
    assert sha256(output / "checkpoint.pth") == before
    assert torch.load(output / "checkpoint.pth", weights_only=True)["iteration"] == 20


def test_an_unwritable_output_folder_is_a_user_error_before_training(tmp_path):
    data = make_dataset(tmp_path / "data", {"trainA": 2, "trainB": 2})
    (tmp_path / "a_file").write_text("x")
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "a_file" / "run",
                        *TINY)
    assert_user_error(result, "cannot write there")


# Untrusted files ------------------------------------------------------------------------

class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_weights_file_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model.1.weight": Exploit(str(marker))}, tmp_path / "evil.pth")
    result = run_script("test.py", "--input", photo_folder(tmp_path / "photos"),
                        "--weights", tmp_path / "evil.pth", "--results", tmp_path / "res")
    assert_user_error(result, "evil.pth", "not a weights file torch can read safely")
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused_on_resume(tmp_path):
    data = make_dataset(tmp_path / "data", {"trainA": 2, "trainB": 2})
    marker = tmp_path / "pwned"
    os.makedirs(tmp_path / "run")
    torch.save({"model": Exploit(str(marker))}, tmp_path / "run" / "checkpoint.pth")
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", "--resume")
    assert_user_error(result, "checkpoint.pth", "not a checkpoint torch can read safely")
    assert not marker.exists()


def test_resume_lists_every_architecture_difference(uninterrupted, tmp_path):
    data, reference = uninterrupted
    result = run_script("train.py", "--dataroot", data, "--output", reference, "--resume",
                        "--ngf", "16", "--n_blocks", "6")
    assert_user_error(result, "--ngf 16 (checkpoint: 8)", "--n_blocks 6 (checkpoint: 2)")


def test_test_py_names_the_blocks_that_would_fit(tmp_path):
    weights = save_generator(tmp_path / "g6.pth", ngf=8, n_blocks=6)
    result = run_script("test.py", "--input", photo_folder(tmp_path / "photos"),
                        "--weights", weights, "--ngf", "8", "--n_blocks", "9")
    assert_user_error(result, "g6.pth", "--ngf 8 --n_blocks 6")


def test_test_py_reports_an_unwritable_results_folder(tmp_path):
    (tmp_path / "a_file").write_text("x")
    result = run_script("test.py", "--input", photo_folder(tmp_path / "photos"),
                        "--weights", save_generator(tmp_path / "g.pth"),
                        "--results", tmp_path / "a_file" / "res")
    assert_user_error(result, "--results", "cannot write there")
