"""test.py --pretrained NAME against a local HTTP server standing in for the authors' one,
and the results page."""
import io
import os
import re

import pytest
import torch

from conftest import TINY, free_port, make_dataset, photo_folder, run_script


@pytest.fixture
def models(file_server, monkeypatch, tmp_path):
    """A tiny generator served as the authors' horse2zebra.pth; the working folder is tmp_path,
    so the cache is tmp_path/output/pretrained."""
    from models import Generator
    buffer = io.BytesIO()
    torch.save(Generator(ngf=8, n_blocks=2).state_dict(), buffer)
    file_server.files["/horse2zebra.pth"] = buffer.getvalue()
    monkeypatch.setenv("CYCLEGAN_MODELS_URL", file_server.url)
    monkeypatch.chdir(tmp_path)
    photo_folder(tmp_path / "photos", n=2)
    return file_server


def pretrained(*args):
    return run_script("test.py", "--input", "photos", "--workers", "0", *args)


def test_a_pretrained_model_is_fetched_once_and_translates_the_folder(models, tmp_path):
    for _ in range(2):
        result = pretrained("--pretrained", "horse2zebra")
        assert result.returncode == 0, result.stderr
    # the second run used the cache
    assert [path for path, _ in models.requests] == ["/horse2zebra.pth"]
    assert (sorted(os.listdir(tmp_path / "output" / "pretrained"))
            == ["horse2zebra.pth", "results_horse2zebra_photos"])
    results = tmp_path / "output" / "pretrained" / "results_horse2zebra_photos"
    assert sorted(os.listdir(results / "A2B")) == ["photo_0.png", "photo_1.png"]


def test_a_one_way_model_asked_for_the_other_way_names_the_model_that_goes_there(models):
    result = pretrained("--pretrained", "horse2zebra", "--direction", "B2A")
    assert result.returncode == 2 and "use --pretrained zebra2horse" in result.stderr
    result = pretrained("--pretrained", "style_vangogh", "--direction", "B2A")
    assert result.returncode == 2 and "no model for the other way was published" in result.stderr
    assert models.requests == []


def test_an_unknown_model_name_lists_the_known_ones(models):
    result = pretrained("--pretrained", "horse2unicorn")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'horse2unicorn'" in result.stderr and "style_monet" in result.stderr


def test_a_cut_download_continues_on_the_next_run(models, tmp_path):
    models.cut.add("/horse2zebra.pth")
    first = pretrained("--pretrained", "horse2zebra")
    assert (first.returncode == 1
            and "run again to continue" in first.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "output" / "pretrained" / "horse2zebra.pth").exists()
    second = pretrained("--pretrained", "horse2zebra")
    assert second.returncode == 0, second.stderr
    size = len(models.files["/horse2zebra.pth"])
    assert models.requests[-1] == ("/horse2zebra.pth", f"bytes={size // 2}-")


def test_a_file_that_is_not_a_generator_is_removed_so_the_next_run_fetches_it_again(models,
                                                                                    tmp_path):
    models.files["/horse2zebra.pth"] = b"<html>moved</html>"
    result = pretrained("--pretrained", "horse2zebra")
    assert result.returncode == 1 and "removed it" in result.stderr
    assert os.listdir(tmp_path / "output" / "pretrained") == []


def test_without_a_network_one_line_says_so(models, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_MODELS_URL", f"http://127.0.0.1:{free_port()}")
    result = pretrained("--pretrained", "horse2zebra")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "could not download" in result.stderr and "CYCLEGAN_MODELS_URL" in result.stderr


def test_the_results_page_shows_input_translation_and_reconstruction_with_relative_links(tmp_path):
    data = make_dataset(tmp_path / "data")
    assert run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", *TINY,
                      "--n_epochs", "1").returncode == 0
    result = run_script("test.py", "--dataroot", data, "--weights", tmp_path / "run",
                        "--workers", "0")
    assert result.returncode == 0, result.stderr
    results = tmp_path / "run" / "results"
    page = (results / "index.html").read_text()
    assert "<th>input</th><th>A2B</th><th>reconstruction</th>" in page
    sources = re.findall(r"<img loading='lazy' src='([^']+)'>", page)
    assert len(sources) == 3 * (3 + 2)  # testA has 3 images, testB 2; three columns each
    for source in sources:
        assert not os.path.isabs(source) and (results / source).is_file()
    assert "testA_0.png</td>" in page  # the file name as caption
    assert f"Translated by the weights in {tmp_path / 'run'}" in page
    assert "<a href='#A2B'>A2B (3 images)</a> | <a href='#B2A'>B2A (2 images)</a>" in page
    assert "<h2 id='A2B'>" in page and "<h2 id='B2A'>" in page


def test_a_download_complete_before_it_was_moved_into_place_is_not_fetched_again(models,
                                                                                 tmp_path):
    cache = tmp_path / "output" / "pretrained"
    cache.mkdir(parents=True)
    (cache / "horse2zebra.pth.part").write_bytes(models.files["/horse2zebra.pth"])
    result = pretrained("--pretrained", "horse2zebra")
    assert result.returncode == 0, result.stderr
    assert models.requests == [("/horse2zebra.pth",
                                f"bytes={len(models.files['/horse2zebra.pth'])}-")]  # 416
    assert (cache / "horse2zebra.pth").is_file() and not (cache / "horse2zebra.pth.part").exists()
