"""Snapshots of the generators every --save_epoch_freq epochs, and the authors'
checkpoints/NAME folders: translated by test.py (their latest weights or --epoch N), and
trained on with --continue_train."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, assert_user_error, make_dataset, run_script, save_generator


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-epoch run with a snapshot every 2 epochs, on a dataset of its own."""
    root = tmp_path_factory.mktemp("snapshots")
    data = make_dataset(root / "data", {"trainA": 3, "trainB": 3, "testA": 2, "testB": 2})
    output = str(root / "run")
    result = run_script("train.py", "--dataroot", data, "--output", output, *TINY,
                        "--n_epochs", "4", "--save_epoch_freq", "2")
    assert result.returncode == 0, result.stderr
    return data, output


def state(path):
    return torch.load(path, weights_only=True)


def translations(results, direction):
    folder = os.path.join(results, direction)
    return {name: np.asarray(Image.open(os.path.join(folder, name))) for name in os.listdir(folder)}


def test_a_snapshot_of_both_generators_is_kept_every_save_epoch_freq_epochs(run):
    _, output = run
    kept = sorted(name for name in os.listdir(output) if name[0].isdigit())
    assert kept == ["2_netG_A2B.pth", "2_netG_B2A.pth", "4_netG_A2B.pth", "4_netG_B2A.pth"]
    latest, last, earlier = (state(os.path.join(output, name)) for name in
                             ("netG_A2B.pth", "4_netG_A2B.pth", "2_netG_A2B.pth"))
    assert all(torch.equal(latest[k], last[k]) for k in latest)
    assert not all(torch.equal(latest[k], earlier[k]) for k in latest)


def test_test_py_epoch_translates_with_that_snapshot(run, tmp_path):
    data, output = run
    result = run_script("test.py", "--dataroot", data, "--weights", output, "--epoch", "2")
    assert result.returncode == 0, result.stderr
    single = run_script("test.py", "--input", os.path.join(data, "testA"), "--direction", "A2B",
                        "--weights", os.path.join(output, "2_netG_A2B.pth"),
                        "--results", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    by_epoch = translations(os.path.join(output, "results_epoch2"), "A2B")
    assert by_epoch and by_epoch.keys() == translations(tmp_path / "single", "A2B").keys()
    for name, pixels in translations(tmp_path / "single", "A2B").items():
        assert np.array_equal(by_epoch[name], pixels)


def test_an_epoch_without_a_snapshot_names_the_files_it_looked_for(run):
    data, output = run
    result = run_script("test.py", "--dataroot", data, "--weights", output, "--epoch", "3")
    assert_user_error(result, "3_netG_A2B.pth or 3_net_G_A.pth", "epoch 3")


def test_epoch_with_a_single_weights_file_is_one_line(run, tmp_path):
    data, _ = run
    result = run_script("test.py", "--input", os.path.join(data, "testA"), "--weights",
                        save_generator(tmp_path / "g.pth"), "--epoch", "2")
    assert_user_error(result, "--epoch 2", "is a file")


def authors_folder(output, folder, epochs=("latest",)):
    """train.py's generators saved as the authors' checkpoints/NAME names them: their G_A
    translates A to B. Their discriminators are there too, unused by test.py."""
    os.makedirs(folder)
    for epoch in epochs:
        for ours, theirs in (("netG_A2B", "net_G_A"), ("netG_B2A", "net_G_B"),
                             ("netD_B", "net_D_A"), ("netD_A", "net_D_B")):
            shutil.copy(os.path.join(output, f"{ours}.pth"),
                        os.path.join(folder, f"{epoch}_{theirs}.pth"))
    return str(folder)


def test_the_authors_checkpoints_folder_translates_both_ways_with_their_latest_generators(
        run, tmp_path):
    data, output = run
    theirs = authors_folder(output, tmp_path / "checkpoints" / "horse2zebra")
    result = run_script("test.py", "--dataroot", data, "--weights", theirs)
    assert result.returncode == 0, result.stderr
    ours = run_script("test.py", "--dataroot", data, "--weights", output,
                      "--results", tmp_path / "ours")
    assert ours.returncode == 0, ours.stderr
    for direction in ("A2B", "B2A"):
        mine = translations(tmp_path / "ours", direction)
        found = translations(os.path.join(theirs, "results"), direction)
        assert mine and found.keys() == mine.keys()
        for name, pixels in found.items():
            assert np.array_equal(mine[name], pixels)


def test_the_authors_epoch_snapshots_are_picked_with_epoch(run, tmp_path):
    data, output = run
    theirs = authors_folder(output, tmp_path / "checkpoints" / "h2z", epochs=("15",))
    result = run_script("test.py", "--dataroot", data, "--weights", theirs, "--epoch", "15")
    assert result.returncode == 0, result.stderr
    assert translations(os.path.join(theirs, "results_epoch15"), "B2A")


def test_continue_train_loads_the_authors_four_networks_their_d_a_as_our_d_b(tmp_path):
    from conftest import load_script
    from cyclegan import CycleGAN
    train_py = load_script("train.py")
    theirs = CycleGAN(device="cpu", ngf=8, ndf=8, n_blocks=2, seed=1)
    for ours, name in (("G_A2B", "G_A"), ("G_B2A", "G_B"), ("D_A", "D_B"), ("D_B", "D_A")):
        torch.save(theirs.networks()[ours].state_dict(), tmp_path / f"latest_net_{name}.pth")
    args, _ = train_py.parse_args(["--dataroot", "d", "--output", str(tmp_path), *TINY,
                                   "--continue_train", "--epoch_count", "5"])
    model = CycleGAN(device="cpu", ngf=8, ndf=8, n_blocks=2, seed=2)
    at = train_py.continue_from(model, args)
    assert at.epoch == 4 and at.iteration == 0
    for name, net in model.networks().items():
        expected = theirs.networks()[name].state_dict()
        assert all(torch.equal(t, expected[k]) for k, t in net.state_dict().items()), name


def test_continue_train_goes_on_from_epoch_count_in_the_authors_folder(run, tmp_path):
    data, output = run
    folder = authors_folder(output, tmp_path / "checkpoints" / "h2z")
    result = run_script("train.py", "--dataroot", data, "--output", folder, *TINY,
                        "--continue_train", "--epoch_count", "3", "--n_epochs", "3",
                        "--log_every", "1")
    assert result.returncode == 0, result.stderr
    assert "at epoch 3, with fresh optimisers" in result.stdout
    with open(os.path.join(folder, "losses.csv")) as f:
        assert {row.split(",")[1] for row in f.read().splitlines()[1:]} == {"3"}
    assert os.path.isfile(os.path.join(folder, "netG_A2B.pth"))


def test_continue_train_without_networks_names_the_files_it_looked_for(run, tmp_path):
    data, _ = run
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "empty", *TINY,
                        "--continue_train")
    assert_user_error(result, "--continue_train", "netG_A2B.pth or latest_net_G_A.pth")
