"""The authors' other networks and channel counts, end to end: their U-Net and grayscale
checkpoint folders translate with their generators' pixels, and train.py trains grayscale,
non-square data with the options they use."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from authors import their_generator
from conftest import TINY, assert_user_error, run_script
from datasets import from_pixels, to_pixels


def authors_checkpoints(folder, netG, input_nc, output_nc, norm="instance"):
    """The authors' checkpoints/NAME with latest_net_G_A.pth (A to B) and latest_net_G_B.pth,
    written from their networks; returns those networks."""
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(1)
    G_A = their_generator(netG, input_nc, output_nc, ngf=4, norm=norm).eval()
    G_B = their_generator(netG, output_nc, input_nc, ngf=4, norm=norm).eval()
    torch.save(G_A.state_dict(), os.path.join(folder, "latest_net_G_A.pth"))
    torch.save(G_B.state_dict(), os.path.join(folder, "latest_net_G_B.pth"))
    return G_A, G_B


def their_pixels(G, path, mode):
    """What their generator makes of an image file read as `mode`, as 8-bit pixels."""
    with Image.open(path) as img:
        pixels = np.asarray(img.convert(mode) if img.mode != "I;16" else img, dtype=np.float64)
    if pixels.max() > 255:
        pixels = pixels / 257
    x = from_pixels(torch.from_numpy(pixels).float().reshape(*pixels.shape[:2], -1)
                    .permute(2, 0, 1))[None]
    with torch.no_grad():
        return to_pixels(G(x))[0].permute(1, 2, 0).squeeze(-1).numpy()


def test_the_authors_unet_256_checkpoints_translate_with_their_generators_pixels(tmp_path):
    weights = tmp_path / "checkpoints" / "facades"
    G_A, G_B = authors_checkpoints(weights, "unet_256", 3, 3)
    photos = tmp_path / "photos"
    os.makedirs(photos)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(photos / "a.png")
    result = run_script("test.py", "--input", photos, "--weights", weights, "--results",
                        tmp_path / "out", "--workers", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    ours = np.asarray(Image.open(tmp_path / "out" / "A2B" / "a.png"))
    assert np.array_equal(ours, their_pixels(G_A, photos / "a.png", "RGB"))
    rec = np.asarray(Image.open(tmp_path / "out" / "rec_A" / "a.png"))
    assert rec.shape == (256, 256, 3)


def test_the_authors_grayscale_resnet_6blocks_checkpoints_give_1_channel_pngs(tmp_path):
    weights = tmp_path / "checkpoints" / "xray"
    G_A, _ = authors_checkpoints(weights, "resnet_6blocks", 1, 1)
    scans = tmp_path / "scans"
    os.makedirs(scans)
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (36, 52), dtype=np.uint16)
    Image.fromarray(deep).save(scans / "deep.png")  # 16-bit grayscale
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(scans / "rgb.jpg")
    result = run_script("test.py", "--input", scans, "--weights", weights, "--results",
                        tmp_path / "out", "--workers", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for name, mode in (("deep", "I;16"), ("rgb", "L")):
        with Image.open(tmp_path / "out" / "A2B" / f"{name}.png") as out:
            assert out.mode == "L"
            ours = np.asarray(out)
        theirs = their_pixels(G_A, scans / (name + (".png" if name == "deep" else ".jpg")), mode)
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs).max() <= 1
    with Image.open(tmp_path / "out" / "real_A" / "deep.png") as real:
        assert real.mode == "L" and real.size == (52, 36)


def test_a_16_bit_scan_keeps_its_precision_through_the_loader(tmp_path):
    from datasets import load_image, to_tensor
    levels = np.array([[1000, 1001], [1002, 60000]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "scan.png")
    x = to_tensor(load_image(str(tmp_path / "scan.png"), channels=1))
    assert x.shape == (1, 2, 2)
    expected = torch.from_numpy(levels.astype(np.float64) / 65535 * 2 - 1).float()
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)
    assert len(torch.unique(x)) == 4  # 8 bits would merge 1000, 1001 and 1002


def test_a_grayscale_generator_refuses_videos_in_one_line(tmp_path):
    weights = tmp_path / "checkpoints" / "xray"
    authors_checkpoints(weights, "resnet_6blocks", 1, 1)
    pytest.importorskip("av")
    from test_video import write_video
    video = write_video(str(tmp_path / "clip.mp4"))
    result = run_script("test.py", "--input", video, "--weights", weights, "--results",
                        tmp_path / "out", "--workers", "0", "--device", "cpu")
    assert_user_error(result, "clip.mp4", "1-channel")


@pytest.fixture(scope="module")
def grayscale_run(tmp_path_factory):
    """A grayscale, non-square dataset (8- and 16-bit scans), trained two epochs with the
    authors' options for it."""
    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for folder, n in (("trainA", 3), ("trainB", 4), ("testA", 2), ("testB", 1)):
        os.makedirs(root / "data" / folder)
        for i in range(n):
            size = (40 + 8 * i, 28) if i % 2 else (28, 44)
            pixels = rng.integers(0, 65536 if i % 2 else 256, size,
                                  dtype=np.uint16 if i % 2 else np.uint8)
            Image.fromarray(pixels).save(root / "data" / folder / f"{i}.png")
    output = root / "run"
    result = run_script("train.py", "--dataroot", root / "data", "--output", output, *TINY,
                        "--input_nc", "1", "--output_nc", "1", "--preprocess", "scale_width",
                        "--load_size", "32", "--size", "24", "--n_epochs", "2",
                        "--save_epoch_freq", "1", "--norm", "batch", "--netD", "n_layers",
                        "--n_layers_D", "2", "--gan_mode", "vanilla", "--lr_policy", "step",
                        "--lr_decay_iters", "1")
    assert result.returncode == 0, result.stderr
    return root, output


def test_train_py_trains_grayscale_non_square_images_with_snapshots(grayscale_run):
    _, output = grayscale_run
    for name in ("netG_A2B.pth", "1_netG_A2B.pth", "2_netG_B2A.pth"):
        state = torch.load(output / name, weights_only=True)
        assert state["model.1.weight"].shape[1] == 1  # one input channel
        assert "model.2.running_mean" in state  # batch norm
    D = torch.load(output / "netD_A.pth", weights_only=True)
    assert D["model.0.weight"].shape[1] == 1
    options = torch.load(output / "checkpoint.pth", weights_only=True)["options"]
    assert (options["netG"], options["n_blocks"], options["input_nc"]) == ("resnet_2blocks", 2, 1)


def test_a_grayscale_snapshot_translates_the_test_scans_at_their_size(grayscale_run):
    root, output = grayscale_run
    result = run_script("test.py", "--dataroot", root / "data", "--weights", output, "--epoch",
                        "1", "--workers", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for direction, name, size in (("A2B", "1.png", (28, 48)), ("B2A", "0.png", (44, 28))):
        with Image.open(output / "results_epoch1" / direction / name) as out:
            assert (out.mode, out.size) == ("L", size)


def test_samples_of_a_grayscale_to_rgb_run_show_all_six_images_in_rgb():
    from utils import VISUAL_NAMES, visuals_grid
    visuals = {name: torch.zeros(1, 1 if name in ("real_A", "rec_A", "fake_A") else 3, 8, 8)
               for name in VISUAL_NAMES}
    assert visuals_grid(visuals).shape == (3, 2 * 8 + 3 * 2, 3 * 8 + 4 * 2)
