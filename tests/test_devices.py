"""Which device a run uses, and what each kind of device gets: --device auto picks a CUDA
GPU, then a Mac's GPU (MPS), then the CPU; an unusable --device is refused in one line. What
torch reports about CUDA and MPS is patched, so these run on any machine."""
import platform

import pytest
import torch

from conftest import TINY, assert_user_error, run_script
from cyclegan import adam
from models import Generator
from utils import UserError, amp_dtype, is_out_of_memory, pick_device, use_amp


@pytest.fixture
def machine(monkeypatch):
    """Set what torch reports: machine(cuda=..., mps=..., mps_built=..., system=...)."""
    def have(cuda=False, mps=False, mps_built=True, system="Darwin"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.backends.mps, "is_built", lambda: mps_built)
        monkeypatch.setattr(platform, "system", lambda: system)
    return have


def test_auto_picks_cuda_first(machine):
    machine(cuda=True, mps=True)
    assert pick_device("auto") == torch.device("cuda")


def test_auto_picks_mps_without_cuda(machine):
    machine(cuda=False, mps=True)
    assert pick_device("auto") == torch.device("mps")


def test_auto_picks_the_cpu_without_either(machine):
    machine(cuda=False, mps=False)
    assert pick_device("auto") == torch.device("cpu")


def test_mps_is_accepted_where_torch_can_use_it(machine):
    machine(mps=True)
    assert pick_device("mps") == torch.device("mps")


@pytest.mark.parametrize("built, system, reason", [
    (False, "Linux", "this PyTorch was built without MPS"),
    (True, "Linux", "runs on macOS only"),
    (True, "Darwin", "macOS 12.3 or newer"),
])
def test_mps_is_refused_saying_why_torch_cannot_use_it(machine, built, system, reason):
    machine(mps=False, mps_built=built, system=system)
    with pytest.raises(UserError, match=reason) as refused:
        pick_device("mps")
    assert str(refused.value).startswith("--device mps: ") and "\n" not in str(refused.value)


def test_train_py_refuses_mps_on_this_machine_in_one_line(dataset, tmp_path):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    args = [a for a in TINY if a not in ("--device", "cpu")]
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *args,
                        "--device", "mps")
    assert_user_error(result, "--device mps: ", "use --device cpu")


def test_amp_auto_is_off_on_mps_and_amp_on_means_fp16():
    mps = torch.device("mps")
    assert not use_amp("auto", mps) and use_amp("on", mps)
    assert amp_dtype(mps) == torch.float16


@pytest.mark.parametrize("error, expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17.9 GB, other allocations: 1 MB)"),
     True),
    (RuntimeError("Expected all tensors to be on the same device"), False),
])
def test_out_of_memory_is_recognised_as_cuda_and_mps_report_it(error, expected):
    assert is_out_of_memory(error) == expected


def test_adam_falls_back_to_the_plain_kernel_where_torch_has_no_fused_one(monkeypatch):
    real_adam = torch.optim.Adam

    def adam_without_fused_kernels(params, fused=None, **options):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point "
                               "Tensors of supported devices")
        return real_adam(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", adam_without_fused_kernels)
    optimizer = adam([Generator(ngf=4, n_blocks=1)], 2e-4)
    assert not optimizer.defaults["fused"] and optimizer.defaults["betas"] == (0.5, 0.999)


def test_adam_is_fused_where_torch_has_the_kernel():
    assert adam([Generator(ngf=4, n_blocks=1)], 2e-4).defaults["fused"]
