"""Mixed precision, channels-last, torch.compile and benchmark.py: same training, other
arithmetic."""
import json
import math

import pytest
import torch

from conftest import TINY, assert_user_error, load_script, run_script
from cyclegan import CycleGAN

SMALL = dict(device="cpu", ngf=8, ndf=8, n_blocks=2, pool_size=0)


def first_step_losses(**options):
    batch = torch.Generator().manual_seed(0)
    real_A, real_B = (torch.rand(1, 3, 32, 32, generator=batch) * 2 - 1 for _ in "AB")
    return CycleGAN(**SMALL, **options).step(real_A, real_B).floats()


def test_bf16_amp_losses_track_fp32_to_bf16_precision():
    fp32, amp = first_step_losses(), first_step_losses(amp=True)
    assert amp != fp32  # bf16 arithmetic really ran
    for name in fp32:
        assert amp[name] == pytest.approx(fp32[name], rel=0.03, abs=1e-3), name
        assert math.isfinite(amp[name])


def test_amp_defaults_to_auto_and_the_bare_flag_means_on():
    from utils import use_amp
    parse = load_script("train.py").build_parser().parse_args
    cpu = torch.device("cpu")
    assert parse(["--dataroot", "d"]).amp == "auto"
    assert parse(["--dataroot", "d", "--amp"]).amp == "on" and use_amp("on", cpu)
    assert parse(["--dataroot", "d", "--amp", "off"]).amp == "off" and not use_amp("off", cpu)


@pytest.mark.parametrize("capabilities, instructions", [
    ({}, None), ({"avx2": True, "avx512_f": True}, None), ({"avx512_bf16": True}, "AVX512-BF16"),
    ({"avx512_bf16": True, "amx_bf16": True}, "AMX")])
def test_amp_auto_trains_and_translates_in_bf16_only_on_cpus_with_bf16_instructions(
        monkeypatch, capabilities, instructions):
    from utils import cpu_bf16, use_amp
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    cpu = torch.device("cpu")
    assert cpu_bf16() == instructions
    assert use_amp("auto", cpu) is (instructions is not None)


def test_amp_auto_trains_in_fp32_with_a_torch_that_does_not_report_cpu_instructions(monkeypatch):
    from utils import use_amp
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert not use_amp("auto", torch.device("cpu"))


def test_training_says_that_amp_auto_chose_bf16_for_this_cpu(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *TINY,
                        "--n_epochs", "1", "--amp", "auto")
    assert result.returncode == 0, result.stderr
    assert ("device cpu (bfloat16 autocast, as --amp auto chooses on CPUs with AVX512-BF16 "
            "(--amp off for fp32); eager" in result.stdout)



@pytest.mark.parametrize("capability,native", [((7, 0), False), ((7, 5), False), ((8, 0), True),
                                               ((9, 0), True)])
def test_amp_auto_picks_bf16_only_on_gpus_with_bf16_tensor_cores(monkeypatch, capability, native):
    # torch.cuda.is_bf16_supported() says yes on a T4 or V100 too (emulated bf16): not asked.
    from utils import amp_dtype, use_amp
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: asked.append(device) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = torch.device("cuda", 1)
    assert use_amp("auto", gpu) is native
    assert amp_dtype(gpu) == (torch.bfloat16 if native else torch.float16)
    assert asked and all(device == gpu for device in asked)


def test_an_explicit_cuda_device_becomes_the_current_one(monkeypatch):
    from utils import pick_device
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]


def test_activations_do_not_overwrite_the_instance_norm_outputs_autograd_needs():
    from models import Discriminator, Generator
    activations = [m for net in (Generator(ngf=8, n_blocks=1), Discriminator(ndf=8))
                   for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
    assert activations and not any(m.inplace for m in activations)

def test_training_names_the_precision_it_runs_in(dataset, tmp_path):
    for flags, precision in (([], "fp32"), (["--amp"], "bfloat16 autocast")):
        result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / precision,
                            *TINY, "--n_epochs", "1", *flags)
        assert result.returncode == 0, result.stderr
        assert f"device cpu ({precision}; eager" in result.stdout


def test_amp_on_cpu_uses_bf16_without_a_gradient_scaler():
    model = CycleGAN(**SMALL, amp=True)
    assert model.amp_dtype == torch.bfloat16 and not model.scaler.is_enabled()


def test_channels_last_gives_the_same_losses_to_float_rounding():
    fp32, channels_last = first_step_losses(), first_step_losses(channels_last=True)
    for name in fp32:
        assert channels_last[name] == pytest.approx(fp32[name], rel=1e-4), name


def layout_copies_in_instance_norm(channels_last):
    """Copies made inside InstanceNorm during one training step (the profiler's aten::clone
    events under aten::instance_norm), and the number of InstanceNorm calls in that step."""
    from torch.profiler import ProfilerActivity, profile
    model = CycleGAN(**SMALL, channels_last=channels_last)
    calls = []
    for net in model.networks().values():
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm2d):
                m.register_forward_hook(lambda *_: calls.append(1))
    real_A, real_B = (torch.rand(1, 3, 32, 32) * 2 - 1 for _ in "AB")
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        model.step(real_A, real_B)

    def inside_instance_norm(event):
        while event is not None and event.name != "aten::instance_norm":
            event = event.cpu_parent
        return event is not None

    copies = [e for e in profiler.events() if e.name == "aten::clone" and inside_instance_norm(e)]
    return len(copies), len(calls)


def test_channels_last_is_copied_back_to_nchw_at_every_instance_norm():
    # What --help and docs/benchmarks.md say of --channels_last: torch's InstanceNorm makes a
    # contiguous (NCHW) copy of a channels-last input at every call, and the convolution after
    # it converts back, so the network never runs in one layout.
    copies, calls = layout_copies_in_instance_norm(channels_last=True)
    assert calls > 0 and copies == calls
    assert layout_copies_in_instance_norm(channels_last=False)[0] == 0


def test_training_with_amp_and_channels_last_runs_and_resumes(dataset, tmp_path):
    out = tmp_path / "run"
    flags = ["--amp", "--channels_last", "--log_every", "1"]
    assert run_script("train.py", "--dataroot", dataset, "--output", out, *TINY, *flags,
                      "--n_epochs", "1").returncode == 0
    result = run_script("train.py", "--dataroot", dataset, "--output", out, "--resume",
                        "--n_epochs", "2")
    assert result.returncode == 0, result.stderr
    options = torch.load(out / "checkpoint.pth", weights_only=True)["options"]
    assert options["amp"] == "on" and options["channels_last"] and options["n_epochs"] == 2


def test_benchmark_reports_medians_flops_memory_and_data_time_as_json(dataset, tmp_path):
    out = tmp_path / "bench.json"
    result = run_script("benchmark.py", "--size", "32", "--ngf", "4", "--ndf", "4",
                        "--n_blocks", "1", "--device", "cpu", "--iters", "3", "--warmup", "1",
                        "--json", out, "--dataroot", dataset, "--amp", "off", "--compile", "off")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    train = report["train_seconds_per_iteration"]
    assert train["n"] == 3 and train["min"] <= train["median"] <= train["max"]
    assert report["train_iterations_per_second"] == pytest.approx(1 / train["median"])
    assert report["train_tflop_per_iteration"] > 0 and report["generator_gflop_per_image"] > 0
    assert report["translate_images_per_second"] > 0 and report["peak_memory_mib"] > 0
    assert "train s/iteration" in result.stdout
    data = report["data_seconds_per_pair"]
    # 7 B images: 7 pairs an epoch
    assert data["n"] == 7 and 0 < data["min"] <= data["median"] <= data["max"]
    assert report["amp"] == "off" and report["compile_seconds"] is None
    assert report["compile_mode"] is None


def test_benchmark_flop_count_matches_the_generator_convolutions():
    # c7s1-64, d128, d256, 9 residual blocks, u128, u64, c7s1-3 at 256x256; torch's counter
    # counts a stride-2 transposed conv by its input pixels (the multiply-adds it really does).
    def conv(pixels, c_in, c_out, k):
        return 2 * pixels * c_in * c_out * k * k
    expected = (conv(256**2, 3, 64, 7) + conv(128**2, 64, 128, 3) + conv(64**2, 128, 256, 3)
                + 18 * conv(64**2, 256, 256, 3) + conv(64**2, 256, 128, 3)
                + conv(128**2, 128, 64, 3) + conv(256**2, 64, 3, 7))
    benchmark = load_script("benchmark.py")
    from models import Generator
    counted = benchmark.count_flops(lambda: Generator()(torch.zeros(1, 3, 256, 256)))
    assert counted == expected


def test_benchmark_refuses_an_unreadable_video_before_timing_anything(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the networks were built before the video was checked")

    monkeypatch.setattr(load_script("benchmark.py"), "CycleGAN", no_model)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    result = run_script("benchmark.py", "--size", "32", "--device", "cpu", "--video", broken)
    assert_user_error(result, f"--video {broken}: not a readable video")


def test_benchmark_rejects_a_size_that_is_not_a_multiple_of_4():
    result = run_script("benchmark.py", "--size", "30", "--device", "cpu")
    assert result.returncode == 2 and "multiple of 4" in result.stderr


def test_same_size_batches_stack_consecutive_images_of_one_size_and_skip_unreadable_ones():
    small, big = torch.zeros(3, 4, 4), torch.zeros(3, 8, 8)
    items = [(small, 0), (small, 1), (None, 2), (small, 3), (big, 4), (small, 5)]
    batches = list(load_script("test.py").same_size_batches(items, batch_size=2))
    assert [(tuple(b.shape), i) for b, i in batches] == [
        ((2, 3, 4, 4), [0, 1]), ((1, 3, 4, 4), [3]), ((1, 3, 8, 8), [4]), ((1, 3, 4, 4), [5])]


def test_batched_translation_writes_the_same_images_as_one_at_a_time(tmp_path):
    import numpy as np
    from PIL import Image
    from conftest import save_generator, write_image
    photos = tmp_path / "photos"
    for i, size in enumerate([(40, 40), (40, 40), (40, 40), (33, 21), (40, 40)]):
        write_image(str(photos / f"p{i}.png"), size=size, seed=i)
    weights = save_generator(tmp_path / "g.pth")
    for batch in ("1", "3"):
        result = run_script("test.py", "--input", photos, "--weights", weights,
                            "--results", tmp_path / batch, "--batch_size", batch, "--workers", "0")
        assert result.returncode == 0, result.stderr
    for i in range(5):
        one, three = (np.asarray(Image.open(tmp_path / b / "A2B" / f"p{i}.png"), dtype=int)
                      for b in ("1", "3"))
        assert one.shape == three.shape and np.abs(one - three).max() <= 1


def test_translation_with_amp_writes_every_image(dataset, tmp_path):
    from conftest import save_generator
    result = run_script("test.py", "--input", f"{dataset}/testA",
                        "--weights", save_generator(tmp_path / "g.pth"),
                        "--results", tmp_path / "res", "--amp", "--batch_size", "2",
                        "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "res" / "A2B").iterdir())) == 3
