"""Finding dataset folders, reading every common image format as RGB, and the sampling."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_image
from datasets import EpochSampler, UnalignedDataset, augment, domain_dir, list_images, load_image
from utils import UserError


@pytest.mark.parametrize("layout", ["trainA", "train/A"])
def test_both_folder_layouts_are_found(tmp_path, layout):
    write_image(str(tmp_path / layout / "x.png"))
    assert domain_dir(str(tmp_path), "train", "A") == str(tmp_path / layout)


def test_missing_dataroot_names_the_folder(tmp_path):
    with pytest.raises(UserError, match="nowhere.*no such folder"):
        domain_dir(str(tmp_path / "nowhere"), "train", "A")


def test_missing_domain_folder_names_it_and_the_expected_layout(tmp_path):
    write_image(str(tmp_path / "trainA" / "x.png"))
    with pytest.raises(UserError, match=r"no folder trainB .*expected DIR/trainA and DIR/trainB"):
        domain_dir(str(tmp_path), "train", "B")


def test_translation_asks_only_for_the_test_folders(tmp_path):
    with pytest.raises(UserError) as missing:
        domain_dir(str(tmp_path), "test", "A")
    assert ("expected DIR/testA and DIR/testB" in str(missing.value)
            and "train" not in str(missing.value))


def test_folder_without_images_is_an_error_naming_it(tmp_path):
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="trainA: no usable images"):
        list_images(str(tmp_path / "trainA"))


def test_every_common_extension_counts_in_any_case_and_other_files_do_not(tmp_path):
    names = ["a.jpg", "b.JPEG", "c.png", "d.bmp", "e.webp", "f.tif", "g.TIFF"]
    for name in names:
        write_image(str(tmp_path / name))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "sub.png").mkdir()
    paths, skipped = list_images(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == names
    assert sorted((os.path.basename(p), reason) for p, reason in skipped) == [
        (".DS_Store", "not an image file"), ("notes.txt", "not an image file"),
        ("sub.png", "a folder")]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_images_of_any_mode_load_as_8_bit_rgb(tmp_path, mode):
    path = write_image(str(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")), size=(20, 10),
                       mode=mode)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (20, 10)


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    pixels = np.asarray(load_image(str(tmp_path / "deep.png")))
    assert pixels[..., 0].min() == 0 and pixels[..., 0].max() == 255
    assert len(np.unique(pixels[..., 0])) == 64  # a ramp, not a white image


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(str(tmp_path / "rotated.jpg")).size == (10, 30)


def test_large_jpeg_decoded_at_reduced_scale_still_covers_the_load_size(tmp_path):
    path = write_image(str(tmp_path / "big.jpg"), size=(1200, 900))
    img = load_image(path, min_size=286)
    assert 286 <= min(img.size) < 900


def test_augment_crops_size_from_a_load_size_resize_and_is_fixed_by_its_seed(tmp_path):
    img = load_image(write_image(str(tmp_path / "x.png"), size=(50, 20)))
    a = augment(img, 36, 32, torch.Generator().manual_seed(1))
    b = augment(img, 36, 32, torch.Generator().manual_seed(1))
    assert a.size == (32, 32)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def left_brighter(img):
    pixels = np.asarray(img, dtype=float)
    return pixels[:, :16].mean() > pixels[:, 16:].mean()


@pytest.mark.parametrize("flip, mirrored", [(True, True), (False, False)])
def test_no_flip_never_mirrors_a_sample_and_keeps_the_crops(flip, mirrored):
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16] = 255  # the left half white
    img = Image.fromarray(pixels)
    samples = [augment(img, 32, 32, torch.Generator().manual_seed(seed), flip=flip)
               for seed in range(20)]
    assert any(not left_brighter(sample) for sample in samples) == mirrored
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    for seed in range(8):  # the same crop with or without flips
        crops = [np.asarray(augment(photo, 40, 32, torch.Generator().manual_seed(seed), flip=f))
                 for f in (True, False)]
        assert any(np.array_equal(crops[0], c) for c in (crops[1], crops[1][:, ::-1]))


@pytest.mark.parametrize("preprocess, size", [
    ("resize_and_crop", (32, 32)), ("crop", (32, 32)), ("scale_width_and_crop", (32, 32)),
    ("scale_width", (48, 32)),  # 48 wide, 48 * 41 / 82 = 24 tall, raised to the crop's 32
    ("none", (80, 40)),  # 82 x 41 rounded to multiples of 4
])
def test_each_preprocess_gives_the_authors_sample_size_from_a_wide_image(preprocess, size):
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 256, (41, 82, 3), np.uint8))
    sample = augment(wide, 48, 32, torch.Generator().manual_seed(0), preprocess=preprocess)
    assert sample.size == size


def test_crop_takes_a_window_of_the_image_at_its_own_scale():
    pixels = np.random.default_rng(1).integers(0, 256, (40, 60, 3), np.uint8)
    crop = np.asarray(augment(Image.fromarray(pixels), 48, 32, torch.Generator().manual_seed(3),
                              flip=False, preprocess="crop"))
    windows = [pixels[top:top + 32, left:left + 32] for top in range(9) for left in range(29)]
    assert any(np.array_equal(crop, window) for window in windows)


def test_training_samples_are_3x_size_x_size_in_minus_one_to_one(tmp_path):
    a = [write_image(str(tmp_path / "A" / f"{i}.png"), size=(20, 20), seed=i) for i in range(2)]
    b = [write_image(str(tmp_path / "B" / f"{i}.png"), size=(64, 48), seed=9 + i) for i in range(3)]
    sample = UnalignedDataset(a, b, load_size=36, size=32)[(1, 2, 1234)]
    for x in (sample["A"], sample["B"]):
        assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1 and x.min() < 0 < x.max()


def test_epoch_has_max_of_both_domains_samples_and_visits_every_a_image():
    triples = list(EpochSampler(n_A=7, n_B=4, seed=0, epoch=0))
    assert len(triples) == 7
    assert sorted(t[0] for t in triples) == list(range(7))
    assert all(0 <= t[1] < 4 for t in triples)


def test_a_smaller_a_domain_is_cycled_to_fill_the_epoch():
    triples = list(EpochSampler(n_A=3, n_B=10, seed=0, epoch=0))
    assert len(triples) == 10
    assert set(t[0] for t in triples) == {0, 1, 2}


def test_epoch_order_is_fixed_by_seed_and_epoch_and_differs_between_epochs():
    assert (list(EpochSampler(50, 50, seed=1, epoch=3))
            == list(EpochSampler(50, 50, seed=1, epoch=3)))
    assert (list(EpochSampler(50, 50, seed=1, epoch=3))
            != list(EpochSampler(50, 50, seed=1, epoch=4)))
    assert (list(EpochSampler(50, 50, seed=1, epoch=3))
            != list(EpochSampler(50, 50, seed=2, epoch=3)))


def test_serial_batches_take_a_in_order_with_the_b_of_the_same_place_and_the_same_seeds():
    serial = list(EpochSampler(3, 5, seed=0, serial=True))
    shuffled = list(EpochSampler(3, 5, seed=0))
    assert [(a, b) for a, b, _ in serial] == [(0, 0), (1, 1), (2, 2), (0, 3), (1, 4)]
    assert [seed for *_, seed in serial] == [seed for *_, seed in shuffled]


def test_set_epoch_gives_the_order_of_a_sampler_made_for_that_epoch():
    sampler = EpochSampler(20, 30, seed=4)
    sampler.set_epoch(2, start=5)
    assert list(sampler) == list(EpochSampler(20, 30, seed=4, epoch=2, start=5))


def test_start_skips_the_samples_already_trained_on():
    full = list(EpochSampler(20, 30, seed=0, epoch=1))
    resumed = EpochSampler(20, 30, seed=0, epoch=1, start=12)
    assert len(resumed) == 18 and list(resumed) == full[12:]
