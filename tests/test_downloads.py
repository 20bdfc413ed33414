"""datasets/download.sh against a local HTTP server standing in for the authors' one: the
download, resuming a cut connection, damaged zips, unknown names, and no network."""
import os
import shutil
import subprocess
import sys

from conftest import ROOT, dataset_zip, free_port


def download(tmp_path, name, base_url):
    """Run a copy of download.sh in tmp_path/datasets, where it unpacks."""
    folder = tmp_path / "datasets"
    folder.mkdir(exist_ok=True)
    shutil.copy(os.path.join(ROOT, "datasets", "download.sh"), folder)
    env = {**os.environ, "CYCLEGAN_DATASETS_URL": base_url, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(folder / "download.sh"), name], capture_output=True,
                          text=True, timeout=120, env=env)


def visible(folder):
    return sorted(p for p in os.listdir(folder) if not p.startswith("."))


def test_a_dataset_downloads_and_unpacks_into_its_folder(tmp_path, file_server):
    file_server.files["/horse2zebra.zip"] = dataset_zip("horse2zebra")
    result = download(tmp_path, "horse2zebra", file_server.url)
    assert result.returncode == 0, result.stderr
    target = tmp_path / "datasets" / "horse2zebra"
    assert visible(target) == ["testA", "testB", "trainA", "trainB"]
    assert visible(target / "trainA") == ["0.jpg", "1.jpg"]
    assert visible(tmp_path / "datasets") == ["download.sh", "horse2zebra"]  # the zip is gone
    assert "python train.py --dataroot" in result.stdout


def test_a_cut_download_continues_where_it_stopped(tmp_path, file_server):
    data = dataset_zip("apple2orange", {"trainA": 20, "trainB": 20, "testA": 2, "testB": 2})
    file_server.files["/apple2orange.zip"] = data
    file_server.cut.add("/apple2orange.zip")
    first = download(tmp_path, "apple2orange", file_server.url)
    assert first.returncode != 0
    assert first.stderr.strip().splitlines()[-1].startswith("download.sh: error: "
                                                            "could not download")
    assert not (tmp_path / "datasets" / "apple2orange").exists()
    assert (tmp_path / "datasets" / "apple2orange.zip.part").stat().st_size == len(data) // 2
    second = download(tmp_path, "apple2orange", file_server.url)
    assert second.returncode == 0, second.stderr
    assert file_server.requests[-1] == ("/apple2orange.zip", f"bytes={len(data) // 2}-")
    assert len(visible(tmp_path / "datasets" / "apple2orange" / "trainB")) == 20


def test_a_damaged_zip_is_refused_and_nothing_is_unpacked(tmp_path, file_server):
    data = bytearray(dataset_zip("facades"))
    data[200:260] = bytes(60)  # inside the first image: its CRC no longer matches
    file_server.files["/facades.zip"] = bytes(data)
    result = download(tmp_path, "facades", file_server.url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("download.sh: error:")
    assert "damaged zip" in result.stderr and "Traceback" not in result.stderr
    assert visible(tmp_path / "datasets") == ["download.sh"]
    assert not [p for p in os.listdir(tmp_path / "datasets") if "unpacking" in p]


def test_an_unknown_name_lists_the_known_ones(tmp_path, file_server):
    result = download(tmp_path, "horse2unicorn", file_server.url)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown dataset 'horse2unicorn'" in result.stderr and "vangogh2photo" in result.stderr
    assert file_server.requests == []


def test_a_name_missing_on_the_server_is_one_line(tmp_path, file_server):
    result = download(tmp_path, "maps", file_server.url)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "404" in result.stderr


def test_cityscapes_explains_where_to_get_it(tmp_path, file_server):
    result = download(tmp_path, "cityscapes", file_server.url)
    assert result.returncode == 2 and "cityscapes-dataset.com" in result.stderr
    assert file_server.requests == []


def test_without_a_network_one_line_says_so(tmp_path):
    result = download(tmp_path, "maps", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (result.stderr.startswith("download.sh: error: could not download")
            and "CYCLEGAN_DATASETS_URL" in result.stderr)
    assert visible(tmp_path / "datasets") == ["download.sh"]


def test_a_complete_earlier_download_is_unpacked_without_fetching_it_again(tmp_path, file_server):
    data = dataset_zip("maps")
    file_server.files["/maps.zip"] = data
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "maps.zip.part").write_bytes(data)  # stopped after the download
    result = download(tmp_path, "maps", file_server.url)
    assert result.returncode == 0, result.stderr
    assert file_server.requests == [("/maps.zip", "HEAD")]
    assert visible(tmp_path / "datasets" / "maps") == ["testA", "testB", "trainA", "trainB"]
