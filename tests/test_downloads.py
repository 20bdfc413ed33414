"""The authors' datasets, downloaded on first use (train.py, test.py) or by
datasets/download.sh, against a local HTTP server standing in for the authors' one: the
download, resuming a cut connection, damaged zips, unknown names, and no network."""
import os
import subprocess
import sys

import pytest

import datasets
from conftest import ROOT, TINY, dataset_zip, free_port, run_script
from utils import UserError


@pytest.fixture
def mirror(file_server, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_DATASETS_URL", file_server.url)
    return file_server


def download(folder, name, capsys):
    """`bash datasets/download.sh FOLDER/NAME`, in this process; returns (exit status, out,
    err)."""
    status = 0
    try:
        datasets.download_main([str(folder / name)])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def error_line(err):
    """The one line of a failure after the progress bar (on stderr, as tqdm's are)."""
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def visible(folder):
    return sorted(p for p in os.listdir(folder) if not p.startswith("."))


def test_a_dataset_downloads_and_unpacks_into_its_folder(tmp_path, mirror, capsys):
    mirror.files["/horse2zebra.zip"] = dataset_zip("horse2zebra")
    status, out, err = download(tmp_path, "horse2zebra", capsys)
    assert status == 0, err
    assert visible(tmp_path / "horse2zebra") == ["testA", "testB", "trainA", "trainB"]
    assert visible(tmp_path / "horse2zebra" / "trainA") == ["0.jpg", "1.jpg"]
    assert visible(tmp_path) == ["horse2zebra"]  # the zip is gone
    assert f"horse2zebra is in {tmp_path / 'horse2zebra'}" in out


def test_train_py_downloads_a_known_dataset_that_is_not_there_and_trains_on_it(tmp_path,
                                                                              mirror):
    mirror.files["/facades.zip"] = dataset_zip("facades")
    result = run_script("train.py", "--dataroot", tmp_path / "datasets" / "facades",
                        "--output", tmp_path / "out", *TINY, "--n_epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "downloading the authors' facades" in result.stdout
    assert visible(tmp_path / "datasets" / "facades") == ["testA", "testB", "trainA", "trainB"]
    assert os.path.exists(tmp_path / "out" / "netG_A2B.pth")


def test_a_missing_folder_with_another_name_is_an_error_not_a_download(tmp_path, mirror):
    result = run_script("train.py", "--dataroot", tmp_path / "horse2unicorn", *TINY)
    assert result.returncode == 2 and "no such folder" in result.stderr
    assert mirror.requests == []


def test_under_torchrun_a_missing_dataset_says_how_to_download_it_first(tmp_path, mirror):
    with pytest.raises(UserError, match=r"bash datasets/download.sh .*horse2zebra"):
        datasets.fetch_dataset(str(tmp_path / "horse2zebra"), allowed=False)
    assert mirror.requests == []


def test_a_cut_download_continues_where_it_stopped(tmp_path, mirror, capsys):
    data = dataset_zip("apple2orange", {"trainA": 20, "trainB": 20, "testA": 2, "testB": 2})
    mirror.files["/apple2orange.zip"] = data
    mirror.cut.add("/apple2orange.zip")
    status, _, err = download(tmp_path, "apple2orange", capsys)
    assert status == 1
    assert error_line(err).startswith("download.sh: error: could not download")
    assert not (tmp_path / "apple2orange").exists()
    assert (tmp_path / "apple2orange.zip.part").stat().st_size == len(data) // 2
    status, _, err = download(tmp_path, "apple2orange", capsys)
    assert status == 0, err
    assert mirror.requests[-1] == ("/apple2orange.zip", f"bytes={len(data) // 2}-")
    assert len(visible(tmp_path / "apple2orange" / "trainB")) == 20


def test_a_damaged_zip_is_refused_and_nothing_is_unpacked(tmp_path, mirror, capsys):
    data = bytearray(dataset_zip("facades"))
    data[200:260] = bytes(60)  # inside the first image: its CRC no longer matches
    mirror.files["/facades.zip"] = bytes(data)
    status, _, err = download(tmp_path, "facades", capsys)
    assert status == 1 and "damaged zip" in error_line(err), err
    assert os.listdir(tmp_path) == []  # neither the zip nor a half-unpacked folder


def test_an_unknown_name_lists_the_known_ones(tmp_path, mirror, capsys):
    status, _, err = download(tmp_path, "horse2unicorn", capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "unknown dataset 'horse2unicorn'" in err and "vangogh2photo" in err
    assert mirror.requests == []


def test_a_name_missing_on_the_server_is_one_line(tmp_path, mirror, capsys):
    status, _, err = download(tmp_path, "maps", capsys)
    assert status == 1 and "404" in error_line(err), err


def test_cityscapes_explains_where_to_get_it(tmp_path, mirror, capsys):
    status, _, err = download(tmp_path, "cityscapes", capsys)
    assert status == 2 and "cityscapes-dataset.com" in err
    assert mirror.requests == []


def test_without_a_network_one_line_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CYCLEGAN_DATASETS_URL", f"http://127.0.0.1:{free_port()}")  # no one
    status, _, err = download(tmp_path, "maps", capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("download.sh: error: could not download")
    assert "CYCLEGAN_DATASETS_URL" in err
    assert visible(tmp_path) == []


def test_a_complete_earlier_download_is_unpacked_without_fetching_it_again(tmp_path, mirror,
                                                                          capsys):
    data = dataset_zip("maps")
    mirror.files["/maps.zip"] = data
    (tmp_path / "maps.zip.part").write_bytes(data)  # stopped after the download
    status, _, err = download(tmp_path, "maps", capsys)
    assert status == 0, err
    assert mirror.requests == [("/maps.zip", f"bytes={len(data)}-")]  # answered 416: complete
    assert visible(tmp_path / "maps") == ["testA", "testB", "trainA", "trainB"]


def test_download_sh_puts_a_named_dataset_next_to_itself(tmp_path, mirror):
    mirror.files["/maps.zip"] = dataset_zip("maps")
    (tmp_path / "datasets").mkdir()
    script = tmp_path / "datasets" / "download.sh"
    script.write_bytes(open(os.path.join(ROOT, "datasets", "download.sh"), "rb").read())
    (tmp_path / "datasets.py").symlink_to(os.path.join(ROOT, "datasets.py"))
    result = subprocess.run(["bash", str(script), "maps"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    assert visible(tmp_path / "datasets" / "maps") == ["testA", "testB", "trainA", "trainB"]
