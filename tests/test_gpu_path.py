"""What a run on a CUDA GPU depends on, checked without one: on fake CUDA tensors (shapes,
dtypes and devices without values, ../shared/notes/cuda-without-a-gpu.md), with torch.cuda's
functions patched, or with the host-side machinery alone. Speed, memory and numbers on a real
GPU are scripts/gpu_check.sh's."""
import time

import types

import pytest
import torch

from conftest import DeviceCopies, load_script, write_image
from models import Generator
from utils import map_tensors, set_fp32_precision

test_py = load_script("test.py")


def settings(tmp_path, device="cuda", **options):
    values = dict(results=str(tmp_path / "results"), device=torch.device(device), amp=True,
                  precision="bfloat16 autocast", batch_size=4, workers=0, side_by_side=False,
                  memory=None)
    return test_py.Settings(**{**values, **options})


def cuda_translator(monkeypatch, G, G_back, options):
    """test.py's Translator for a CUDA GPU with bf16 autocast, as on an H100; torch makes a
    CUDA autocast only where it sees a GPU."""
    with monkeypatch.context() as patched:
        patched.setattr(torch.cuda, "is_available", lambda: True)
        return test_py.Translator(G, G_back, options)


def test_pixels_cross_to_the_gpu_and_back_as_uint8_one_copy_each_way(fake_cuda, monkeypatch,
                                                                      tmp_path):
    G, G_back = (Generator(ngf=8, n_blocks=1).eval() for _ in "AB")
    translator = cuda_translator(monkeypatch, G, G_back, settings(tmp_path))
    pixels = torch.zeros(4, 3, 48, 64, dtype=torch.uint8)
    with fake_cuda:
        G.to("cuda"), G_back.to("cuda")
        with DeviceCopies() as copies:
            fakes, recs = translator(pixels, ["a", "b", "c", "d"])
    assert copies.to_device == [pixels.nbytes]  # one byte per value, not four
    assert copies.to_host == [pixels.nbytes, pixels.nbytes]  # the translations, the cycle
    for out in (fakes, recs):
        assert out.dtype == torch.uint8 and out.device.type == "cpu"
        assert out.shape == pixels.shape


class Recording:
    """A translator that hands each batch back as its translation, recording the batches."""
    G, G_back = types.SimpleNamespace(in_ch=3, out_ch=3), None

    def __init__(self):
        self.batches = []

    def __call__(self, pixels, names, reconstruct=True):
        self.batches.append(pixels)
        return pixels.clone(), [None] * len(pixels)


@pytest.fixture
def pinned(monkeypatch):
    """The tensors made with torch.empty(..., pin_memory=True): pinning itself needs a driver,
    so they are made unpinned and recorded."""
    made, empty = [], torch.empty

    def recording_empty(*shape, pin_memory=False, **options):
        tensor = empty(*shape, **options)
        if pin_memory:
            made.append(tensor)
        return tensor

    monkeypatch.setattr(torch, "empty", recording_empty)
    return made


def test_image_batches_for_a_gpu_are_stacked_in_page_locked_memory(tmp_path, pinned):
    paths = [write_image(str(tmp_path / "in" / f"{i}.png"), size=(40, 30), seed=i)
             for i in range(5)]
    translator = Recording()
    written = list(test_py.translate_images("A2B", {p: str(i) for i, p in enumerate(paths)},
                                            translator, settings(tmp_path)))
    assert len(written) == 5 and [len(b) for b in translator.batches] == [4, 1]
    assert all(any(batch is p for p in pinned) for batch in translator.batches)


def test_video_frames_for_a_gpu_are_stacked_in_page_locked_memory(tmp_path, pinned):
    pytest.importorskip("av")
    from test_video import write_video
    clip = write_video(tmp_path / "clip.mp4", n=6)
    translator = Recording()
    test_py.translate_video("A2B", clip, "clip", translator, settings(tmp_path))
    assert [len(b) for b in translator.batches] == [4, 2]
    assert all(any(batch is p for p in pinned) for batch in translator.batches)


def test_batches_for_the_cpu_are_not_pinned(tmp_path, pinned):
    path = write_image(str(tmp_path / "in" / "0.png"))
    translator = Recording()
    list(test_py.translate_images("A2B", {path: "0"}, translator, settings(tmp_path, "cpu")))
    assert len(translator.batches) == 1 and pinned == []


def test_translation_waits_for_the_png_writers_rather_than_piling_up_images(tmp_path,
                                                                             monkeypatch):
    threads, written = 2, []

    def slow_save(image, *args):
        time.sleep(0.05)
        written.append(image)

    monkeypatch.setattr(test_py, "usable_cores", lambda: threads)
    monkeypatch.setattr(test_py, "save_images", slow_save)
    paths = [write_image(str(tmp_path / "in" / f"{i}.png"), size=(8, 8), seed=i)
             for i in range(16)]
    pending = []
    for count, _ in enumerate(test_py.translate_images(
            "A2B", {p: str(i) for i, p in enumerate(paths)}, Recording(),
            settings(tmp_path, "cpu", batch_size=1)), start=1):
        pending.append(count - len(written))
    assert len(written) == 16
    # Each thread writes one image while one more waits for it, and no more.
    assert max(pending) == 2 * threads


def test_a_failed_write_is_raised_once_every_write_handed_over_is_done():
    from utils import Behind
    done = []

    def write(i):
        time.sleep(0.01)
        if i == 0:
            raise OSError(28, "No space left on device")
        done.append(i)

    with pytest.raises(OSError, match="No space left"):
        with Behind(threads=2, limit=8) as writer:
            for i in range(5):
                writer.submit(write, i)
    assert sorted(done) == [1, 2, 3, 4]


def test_the_pngs_hold_the_input_pixels_and_the_translation_rounded_as_save_image_rounds(
        tmp_path):
    import numpy as np
    from PIL import Image
    from torchvision.utils import save_image

    from conftest import run_script, save_generator
    from datasets import to_tensor
    from models import translate
    weights = save_generator(tmp_path / "G.pth")
    photo = write_image(str(tmp_path / "in" / "photo.png"), size=(45, 31))
    result = run_script("test.py", "--input", photo, "--weights", weights, "--device", "cpu",
                        "--results", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    G = Generator(ngf=8, n_blocks=2).eval()
    G.load_state_dict(torch.load(weights, weights_only=True))
    save_image(translate(G, to_tensor(Image.open(photo))[None]) * 0.5 + 0.5, tmp_path / "x.png")
    pixels = {name: np.asarray(Image.open(path)) for name, path in [
        ("input", photo), ("real", tmp_path / "out" / "real_A" / "photo.png"),
        ("fake", tmp_path / "out" / "A2B" / "photo.png"), ("expected", tmp_path / "x.png")]}
    assert np.array_equal(pixels["real"], pixels["input"])
    assert np.array_equal(pixels["fake"], pixels["expected"])


def on_fake_cuda(model):
    """Everything of a CycleGAN that a CUDA run keeps on the GPU, moved there: the networks,
    the optimisers' state and the replay buffers."""
    for net in model.networks().values():
        net.to("cuda")
    for optimizer in (model.opt_G, model.opt_D):
        for state in optimizer.state.values():
            state.update({k: v.to("cuda") for k, v in state.items()})
    for pool in (model.pool_A, model.pool_B):
        pool.images = [image.to("cuda") for image in pool.images]


def devices(state):
    found = set()
    map_tensors(lambda t: found.add(t.device.type), state)
    return found


def test_weights_and_checkpoints_of_a_gpu_run_are_saved_as_cpu_tensors(fake_cuda, monkeypatch,
                                                                       tmp_path):
    from cyclegan import CycleGAN
    train_py = load_script("train.py")
    model = CycleGAN(ngf=4, ndf=4, n_blocks=1, pool_size=2)
    model.step(*(torch.rand(1, 3, 32, 32) * 2 - 1 for _ in "AB"))  # optimiser state, buffers
    args, _ = train_py.parse_args(["--dataroot", str(tmp_path), "--output", str(tmp_path)])
    saved = {}
    monkeypatch.setattr(train_py, "atomic_save", lambda obj, path: saved.update({path: obj}))
    monkeypatch.setattr(train_py, "non_finite", lambda model: [])  # fake tensors have no values
    launch = type("Launch", (), {"world_size": 1, "writes": True})
    with fake_cuda:
        on_fake_cuda(model)
        assert devices(model.state_dict()) == {"cuda"}
        train_py.save_run(model, args, launch, train_py.Position())
    assert len(saved) == 5  # four networks and the checkpoint
    for path, obj in saved.items():
        assert devices(obj) == {"cpu"}, path


def test_training_runs_fp32_convolutions_and_products_in_tf32(dataset, tmp_path, fp32_precision):
    from conftest import TINY, run_script
    set_fp32_precision("ieee")
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *TINY,
                        "--n_epochs", "1")
    assert result.returncode == 0, result.stderr
    assert fp32_precision() == ("tf32", "tf32")


def test_translation_runs_fp32_in_true_fp32(tmp_path, fp32_precision):
    from conftest import run_script, save_generator
    set_fp32_precision("tf32")
    result = run_script("test.py", "--input", write_image(str(tmp_path / "in" / "x.png")),
                        "--weights", save_generator(tmp_path / "G.pth"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert fp32_precision() == ("ieee", "ieee")


def test_training_on_a_gpu_says_its_fp32_convolutions_are_tf32(monkeypatch):
    train_py = load_script("train.py")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    args, _ = train_py.parse_args(["--dataroot", "d", "--amp", "off"])
    launch = type("Launch", (), {"device": torch.device("cuda"), "torchrun": False,
                                 "world_size": 1})
    model = type("Model", (), {"amp_dtype": None})
    line = train_py.start_line(args, launch, model, (["a"], ["b"]), "compiled")
    assert "device cuda (fp32, TF32 convolutions; compiled)" in line
