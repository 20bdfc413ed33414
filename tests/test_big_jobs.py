"""Big jobs and odd files: file names that are not UTF-8, photos over Pillow's size limit,
a translation killed halfway that a rerun finishes, and two runs in one folder."""
import os
import platform
import re
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

import datasets
from conftest import (ROOT, TINY, assert_user_error, make_dataset, run_script, save_generator,
                      write_image)
from test_evaluate import random_inception  # noqa: F401 (a fixture)
from test_robustness import PAUSED_WRITER, wait_for
from test_video import write_video

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes, as old Windows zip files and cameras wrote


def files_in(folder):
    return sorted(os.listdir(os.fsencode(folder)))


# File names that are not UTF-8 ---------------------------------------------------------

def test_test_py_translates_a_name_that_is_not_utf8_keeping_its_bytes(tmp_path):
    photos, results = tmp_path / "photos", tmp_path / f"results_{NOT_UTF8}"
    photos.mkdir()
    write_image(photos / f"{NOT_UTF8}.png")
    (photos / f"broken_{NOT_UTF8}.png").write_bytes(b"not an image")
    save_generator(tmp_path / "netG_A2B.pth")
    result = run_script("test.py", "--input", photos, "--weights", tmp_path / "netG_A2B.pth",
                        "--results", results, "--workers", "0", "--device", "cpu",
                        in_process=False)
    assert result.returncode == 0, result.stderr
    assert files_in(results / "A2B") == [b"caf\xe9.png"]
    assert "skipped" in result.stderr and "broken_caf" in result.stderr
    page = (results / "index.html").read_text(encoding="utf-8")
    assert "src='A2B/caf%E9.png'" in page and "caf\\xe9.png</td>" in page
    assert "results in" in result.stdout


def test_a_video_whose_name_is_not_utf8_translates_keeping_its_bytes(tmp_path):
    clip = write_video(tmp_path / f"clip_{NOT_UTF8}.mp4", n=3)
    save_generator(tmp_path / "netG_A2B.pth")
    result = run_script("test.py", "--input", clip, "--weights", tmp_path / "netG_A2B.pth",
                        "--results", tmp_path / "out", "--device", "cpu", in_process=False)
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path / "out" / "A2B") == [b"clip_caf\xe9.mp4"]
    assert "src='A2B/clip_caf%E9.mp4'" in (tmp_path / "out" / "index.html").read_text()


def test_train_py_trains_on_names_and_into_a_folder_that_are_not_utf8(tmp_path):
    data = Path(make_dataset(tmp_path / "data", {"trainA": 2, "trainB": 2}))
    os.rename(data / "trainA" / "trainA_0.png", data / "trainA" / f"{NOT_UTF8}.png")
    (data / "trainB" / f"broken_{NOT_UTF8}.png").write_bytes(b"not an image")
    output = tmp_path / f"run_{NOT_UTF8}"
    result = run_script("train.py", "--dataroot", data, "--output", output, *TINY,
                        "--n_epochs", "1", in_process=False)
    assert result.returncode == 0, result.stderr
    assert "broken_caf" in result.stderr and "done after 1 epoch" in result.stdout
    assert b"checkpoint.pth" in files_in(output)


def test_evaluate_py_measures_translations_of_names_that_are_not_utf8(tmp_path,
                                                                      random_inception):  # noqa: F811
    data = Path(make_dataset(tmp_path / "data", {"testA": 3, "testB": 3}))
    for domain in "AB":
        folder = data / f"test{domain}"
        os.rename(folder / f"test{domain}_0.png", folder / f"{NOT_UTF8}.png")
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("netG_A2B.pth", "netG_B2A.pth"):
        save_generator(weights / name)
    result = run_script("evaluate.py", "--dataroot", data, "--weights", weights, "--inception",
                        random_inception, "--device", "cpu", "--kid_subsets", "5",
                        in_process=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r"A2B\s+\d+\.\d+", result.stdout) and "3 vs 3" in result.stdout
    assert b"caf\xe9.png" in files_in(weights / "results" / "rec_A")


# Photos over Pillow's size limit --------------------------------------------------------

def png_claiming(width, height):
    """A valid PNG header of any size, with a few bytes of data: what a decompression bomb
    (or a damaged file) shows before it is decoded."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_a_header_claiming_gigapixels_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    save_generator(tmp_path / "netG_A2B.pth")
    result = run_script("test.py", "--input", tmp_path / "bomb.png", "--weights",
                        tmp_path / "netG_A2B.pth", "--results", tmp_path / "results")
    assert_user_error(result, "bomb.png", "too large: 100000x100000 is 10000 MP")
    assert not (tmp_path / "results").exists()


def test_an_image_over_pillows_default_limit_passes_where_memory_allows(tmp_path, monkeypatch):
    path = tmp_path / "200mp.png"
    path.write_bytes(png_claiming(16320, 12240))
    monkeypatch.setattr(datasets, "host_available_memory", lambda: 64 << 30)
    assert 16320 * 12240 > datasets.PILLOW_LIMIT
    assert datasets.pixel_limit() > 16320 * 12240
    assert datasets.check_image(str(path)) is None
    with Image.open(path) as img:  # the header is read without Pillow's guard
        assert img.size == (16320, 12240)
    assert datasets.check_image(str(path), max_pixels=190e6).startswith("too large: 16320x12240")


def test_a_photo_over_the_limit_translates_in_tiles_where_memory_allows(tmp_path, monkeypatch):
    # Pillow's limit lowered to 10,000 pixels and the memory to what holds 200,000: a 400x300
    # photo is over the one and within the other, and too large to run whole in 0.1 GB.
    monkeypatch.setattr(datasets, "PILLOW_LIMIT", 10_000)
    monkeypatch.setattr(datasets, "host_available_memory",
                        lambda: 200_000 * datasets.HOST_BYTES_PER_PIXEL * 4 // 3)
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "large.png", size=(400, 300))
    write_image(photos / "too_large.png", size=(600, 400))
    save_generator(tmp_path / "netG_A2B.pth", ngf=16, n_blocks=1)
    result = run_script("test.py", "--input", photos, "--weights", tmp_path / "netG_A2B.pth",
                        "--results", tmp_path / "results", "--memory_gb", "0.1", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "large (400x300) translated in tiles" in result.stdout
    assert Image.open(tmp_path / "results" / "A2B" / "large.png").size == (400, 300)
    assert re.search(r"skipped .*too_large.png: too large: 600x400 is 0 MP, over the 0 MP .*"
                     r"--max_megapixels", result.stderr)


def test_max_megapixels_sets_the_limit(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "small.png", size=(300, 300))
    write_image(photos / "large.png", size=(400, 300))
    save_generator(tmp_path / "netG_A2B.pth")
    result = run_script("test.py", "--input", photos, "--weights", tmp_path / "netG_A2B.pth",
                        "--results", tmp_path / "results", "--max_megapixels", "0.1",
                        "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path / "results" / "A2B") == [b"small.png"]
    assert "large.png: too large: 400x300" in result.stderr


# A translation stopped halfway ----------------------------------------------------------

@pytest.fixture
def folder_of_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(24):
        write_image(photos / f"{i:02d}.png", size=(256, 256), seed=i)
    save_generator(tmp_path / "netG_A2B.pth", ngf=16, n_blocks=2)
    return photos, tmp_path / "netG_A2B.pth", tmp_path / "results"


def translate(photos, weights, results, *extra):
    return run_script("test.py", "--input", photos, "--weights", weights, "--results", results,
                      "--workers", "0", "--device", "cpu", "--amp", "off", *extra)


def outputs(results):
    """{file under results: (inode, mtime)}: a file written again gets a new inode."""
    found = {}
    for folder in ("A2B", "real_A"):
        for name in os.listdir(results / folder):
            stat = os.stat(results / folder / name)
            found[f"{folder}/{name}"] = (stat.st_ino, stat.st_mtime_ns)
    return found


def test_a_translation_killed_halfway_is_finished_by_a_rerun_without_translating_twice(
        folder_of_photos):
    photos, weights, results = folder_of_photos
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "test.py"), "--input", photos,
                             "--weights", weights, "--results", results, "--workers", "0",
                             "--device", "cpu", "--amp", "off"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    translated = results / "A2B"
    wait_for(lambda: translated.is_dir() and len(os.listdir(translated)) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = outputs(results)
    complete = {n for n in before if n.endswith(".png")}
    for name in complete:
        Image.open(results / name).load()  # whole, though the kill came mid-write
    done = {n.split("/")[1] for n in complete if n.startswith("A2B/")
            and f"real_A/{n.split('/')[1]}" in complete}
    assert 0 < len(done) < 24

    result = translate(photos, weights, results)
    assert result.returncode == 0, result.stderr
    assert f"A2B: {len(done)} of 24 inputs were translated by a run before" in result.stdout
    after = outputs(results)
    assert sorted(n for n in after if n.endswith(".png")) == sorted(
        f"{folder}/{i:02d}.png" for folder in ("A2B", "real_A") for i in range(24))
    assert all(after[f"{folder}/{name}"] == before[f"{folder}/{name}"]
               for name in done for folder in ("A2B", "real_A"))
    assert not [n for n in after if n.endswith(".tmp")]
    assert (results / "index.html").read_text().count("<tr><td>") == 24


def test_a_rerun_with_other_weights_translates_everything_again(folder_of_photos):
    photos, weights, results = folder_of_photos
    assert translate(photos, weights, results, "--num_test", "4").returncode == 0
    first = outputs(results)
    torch.manual_seed(1)
    save_generator(weights, ngf=16, n_blocks=2)
    result = translate(photos, weights, results, "--num_test", "4")
    assert result.returncode == 0, result.stderr
    assert "made with other weights or precision; translating every input again" in result.stdout
    second = outputs(results)
    assert all(second[name][0] != first[name][0] for name in first)
    again = translate(photos, weights, results, "--num_test", "4")
    assert "A2B: 4 of 4 inputs were translated by a run before" in again.stdout
    assert outputs(results) == second


def test_overwrite_translates_every_input_again(folder_of_photos):
    photos, weights, results = folder_of_photos
    assert translate(photos, weights, results, "--num_test", "2").returncode == 0
    first = outputs(results)
    result = translate(photos, weights, results, "--num_test", "2", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "translated by a run before" not in result.stdout
    assert all(outputs(results)[name][0] != first[name][0] for name in first)


def test_a_rerun_with_other_precision_translates_everything_again(folder_of_photos):
    photos, weights, results = folder_of_photos
    assert translate(photos, weights, results, "--num_test", "2").returncode == 0
    result = translate(photos, weights, results, "--num_test", "2", "--amp", "on")
    assert "made with other weights or precision" in result.stdout


# Two runs in one folder -----------------------------------------------------------------

def holder_line(pid):
    return f"process {pid} on {platform.node()}"


def test_a_second_train_py_on_a_busy_folder_stops_naming_the_first_and_resume_works_after_sigkill(
        tmp_path):
    data = make_dataset(tmp_path / "data", {"trainA": 4, "trainB": 4})
    output, paused = tmp_path / "run", tmp_path / "paused"
    run = ["--dataroot", data, "--output", output, *TINY, "--n_epochs", "2", "--save_every", "2"]
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_WRITER, str(paused),
                             os.path.join(ROOT, "train.py"), *map(str, run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(paused.exists, proc)
    for extra in (["--resume"], []):
        assert_user_error(run_script("train.py", *run, *extra), str(output),
                          f"in use by train.py, {holder_line(proc.pid)}")
    proc.kill()
    proc.wait()
    result = run_script("train.py", "--dataroot", data, "--output", output, "--resume")
    assert result.returncode == 0, result.stderr
    assert "done after 2 epoch(s)" in result.stdout


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from utils import claimed
with claimed(sys.argv[2], "test.py", "--results"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_test_py_into_a_busy_results_folder_stops_naming_the_first(folder_of_photos):
    photos, weights, results = folder_of_photos
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, ROOT, str(results)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert_user_error(translate(photos, weights, results, "--num_test", "1"),
                          f"in use by test.py, {holder_line(holder.pid)}")
    finally:
        holder.kill()
        holder.wait()
    assert translate(photos, weights, results, "--num_test", "1").returncode == 0


def test_a_folder_made_for_a_run_that_stops_at_once_is_removed(tmp_path):
    data = Path(make_dataset(tmp_path / "data", {"trainA": 2, "trainB": 1}))
    (data / "trainB" / "trainB_0.png").write_bytes(b"not an image")
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", *TINY)
    assert result.returncode == 2
    assert not (tmp_path / "run").exists()
