"""export.py: ONNX and TorchScript files that give test.py's pixels, at any size, with their
contract in their metadata; and the example of docs/export.md, run as written."""
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from authors import their_generator
from conftest import ROOT, assert_user_error, run_script, save_generator

SIZES = ((256, 256), (300, 200), (203, 157))  # (width, height); the last pads inside the graph


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for w, h in SIZES:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{w}x{h}.png")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, photos):
    """A training folder of two generators, test.py's translations of the photos, and both
    exports of it."""
    root = tmp_path_factory.mktemp("run")
    for name in ("netG_A2B.pth", "netG_B2A.pth"):
        save_generator(root / name, ngf=8, n_blocks=2)
    result = run_script("test.py", "--input", photos, "--weights", root, "--results",
                        root / "results", "--workers", "0", "--device", "cpu", "--amp", "off")
    assert result.returncode == 0, result.stderr
    for fmt in ("onnx", "torchscript"):
        if fmt == "onnx" and not onnx_installed():
            continue
        # In its own process, as users run it: test.py's true-fp32 setting, left in this
        # one, is a combination that torch.export's check of the old TF32 flag refuses.
        result = run_script("export.py", "--weights", root, "--format", fmt, "--output",
                            root / "exported", in_process=False)
        assert result.returncode == 0, result.stderr
    return root


def onnx_installed():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def needs_onnx():
    if not onnx_installed():
        pytest.skip("onnx and onnxscript are not installed (pip install onnx onnxscript)")
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def as_input(path):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return pixels.transpose(2, 0, 1)[None] / 127.5 - 1


def as_pixels(translation):
    return np.clip(np.floor((translation[0] + 1) * 127.5 + 0.5), 0, 255).astype(np.uint8)


def pixels_of_test_py(run, name):
    return np.asarray(Image.open(run / "results" / "A2B" / name)).transpose(2, 0, 1)


@pytest.mark.parametrize("width,height", SIZES)
def test_onnx_runtime_gives_pixels_of_test_py(run, photos, width, height):
    ort = needs_onnx()
    session = ort.InferenceSession(str(run / "exported" / "netG_A2B.onnx"),
                                   providers=["CPUExecutionProvider"])
    name = f"{width}x{height}.png"
    translation = session.run(None, {"image": as_input(photos / name)})[0]
    assert translation.shape == (1, 3, height, width)
    difference = np.abs(as_pixels(translation).astype(int) - pixels_of_test_py(run, name))
    assert difference.max() <= 1


@pytest.mark.parametrize("width,height", SIZES)
def test_torchscript_gives_pixels_of_test_py(run, photos, width, height):
    G = torch.jit.load(str(run / "exported" / "netG_A2B.pt"))
    name = f"{width}x{height}.png"
    with torch.no_grad():
        translation = G(torch.from_numpy(as_input(photos / name))).numpy()
    assert translation.shape == (1, 3, height, width)
    difference = np.abs(as_pixels(translation).astype(int) - pixels_of_test_py(run, name))
    assert difference.max() <= 1


def test_an_onnx_batch_of_two_translates_each_image_as_alone(run, photos):
    ort = needs_onnx()
    session = ort.InferenceSession(str(run / "exported" / "netG_A2B.onnx"),
                                   providers=["CPUExecutionProvider"])
    one = as_input(photos / "256x256.png")
    batch = np.concatenate([one, -one])
    together = session.run(None, {"image": batch})[0]
    np.testing.assert_allclose(together[:1], session.run(None, {"image": one})[0], atol=1e-5)


def test_the_contract_is_in_the_files_metadata(run):
    needs_onnx()
    import onnx
    props = {p.key: p.value for p in onnx.load(str(run / "exported" / "netG_A2B.onnx"))
             .metadata_props}
    assert "[-1, 1]" in props["input"] and "[-1, 1]" in props["output"]
    assert "multiple of 4" in props["padding"]
    assert (props["direction"], props["netG"], props["ngf"]) == ("A2B", "resnet_2blocks", "8")
    with zipfile.ZipFile(run / "exported" / "netG_A2B.pt") as archive:
        name = next(n for n in archive.namelist() if n.endswith("extra/metadata.json"))
        meta = json.loads(archive.read(name))
    assert meta["padding"] == props["padding"] and meta["in_channels"] == "3"


def test_the_authors_grayscale_generator_exports_with_one_channel_in_and_out(tmp_path):
    torch.save(their_generator("resnet_6blocks", 1, 1, ngf=4).state_dict(),
               tmp_path / "latest_net_G_A.pth")
    result = run_script("export.py", "--weights", tmp_path / "latest_net_G_A.pth",
                        "--direction", "A2B", "--format", "torchscript", "--output", tmp_path / "x")
    assert result.returncode == 0, result.stderr
    G = torch.jit.load(str(tmp_path / "x" / "netG_A2B.pt"))
    assert G(torch.zeros(2, 1, 30, 22)).shape == (2, 1, 30, 22)


def test_a_missing_or_foreign_weights_file_is_one_line(tmp_path):
    assert_user_error(run_script("export.py", "--weights", tmp_path / "none.pth", "--output",
                                 tmp_path / "x"), "none.pth", "no such file")
    (tmp_path / "notes.pth").write_text("not weights")
    assert_user_error(run_script("export.py", "--weights", tmp_path / "notes.pth", "--direction",
                                 "A2B", "--output", tmp_path / "x"), "notes.pth",
                      "not a weights file")
    assert not (tmp_path / "x").exists()


def test_the_example_of_docs_export_md_runs_as_written(run, photos, tmp_path):
    needs_onnx()
    text = open(os.path.join(ROOT, "docs", "export.md")).read()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(example.strip().splitlines()) <= 15
    (tmp_path / "example.py").write_text(example)
    (tmp_path / "netG_A2B.onnx").write_bytes((run / "exported" / "netG_A2B.onnx").read_bytes())
    # PNG bytes under the example's file name (Pillow reads by content): no JPEG loss
    (tmp_path / "horse.jpg").write_bytes((photos / "300x200.png").read_bytes())
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "zebra.png: 300 x 200" in result.stdout
    zebra = np.asarray(Image.open(tmp_path / "zebra.png")).transpose(2, 0, 1)
    assert np.abs(zebra.astype(int) - pixels_of_test_py(run, "300x200.png")).max() <= 1
