"""scripts/gpu_check.sh, the check a session with a GPU runs: it refuses what it cannot do in
one line, and a check that fails fails the script, naming its section, while the other
sections still run. The whole smoke run is .ci/run's; these run single sections, in this
process, against a sabotaged product."""
import os
import subprocess

import pytest
import torch

from conftest import ROOT, load_script
from cyclegan import CycleGAN, Losses


def gpu_check(*args, root=ROOT, env=None):
    return subprocess.run(["bash", os.path.join(root, "scripts", "gpu_check.sh"), *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_a_machine_without_cuda_is_refused_in_one_line(tmp_path):
    result = gpu_check(tmp_path / "report", env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "no CUDA GPU here" in result.stderr and "--smoke" in result.stderr


def test_an_unknown_section_is_refused_naming_the_sections(tmp_path, capsys):
    check = load_script("scripts/gpu_check.py")
    with pytest.raises(SystemExit) as refused:
        check.parse_args(["--smoke", "--only", "step,speeed", str(tmp_path / "report")])
    error = capsys.readouterr().err
    assert refused.value.code == 2 and error.count("\n") == 1
    assert "no section speeed" in error and "tiles" in error


@pytest.fixture
def check(fp32_precision):
    """scripts/gpu_check.py, run in this process: main(argv) returns its exit status."""
    module = load_script("scripts/gpu_check.py")

    def main(*argv):
        with pytest.raises(SystemExit) as exited:
            module.main([str(a) for a in argv])
        return exited.value.code
    return main


def test_a_check_that_fails_fails_the_script_naming_its_section(check, tmp_path, monkeypatch):
    # A step that trains on other inputs than it was given: the GPU's step (here, a second
    # CPU one) no longer gives the CPU's losses.
    step = CycleGAN.step
    monkeypatch.setattr(CycleGAN, "step", lambda self, a, b: step(self, a + torch.rand_like(a), b))
    status = check("--smoke", "--only", "environment,step", tmp_path / "out")
    assert status.startswith("gpu_check.sh: error: failed sections: step ")
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| 1e-3 | NO |" in report and "| step |" in report


def test_a_section_that_breaks_is_marked_fail_and_the_next_sections_still_run(check, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(Losses, "floats", lambda self: 1 / 0)
    status = check("--smoke", "--only", "step,amp,environment", tmp_path / "out")
    assert status.startswith("gpu_check.sh: error: failed sections: step, amp ")
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| section step | FAIL: ZeroDivisionError: division by zero |  | FAIL |" in report
    assert "| environment | 0 | passed |" in report
    assert "ZeroDivisionError" in (tmp_path / "out" / "step.log").read_text()
