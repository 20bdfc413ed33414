"""scripts/gpu_check.sh, the check a session with a GPU runs: it refuses what it cannot do in
one line, and a check that fails fails the script, naming its section, while the other
sections still run. The whole smoke run is .ci/run's; these run single sections."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, load_script


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
def sabotaged(tmp_path):
    """A copy of the repository whose cyclegan.py is changed by `sabotage(old, new)`."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns(".git", "output", "datasets",
                                                              "docs", "__pycache__"))

    def sabotage(old, new):
        path = root / "cyclegan.py"
        source = path.read_text()
        assert old in source
        path.write_text(source.replace(old, new))
        return root
    return sabotage


def test_a_check_that_fails_fails_the_script_naming_its_section(sabotaged, tmp_path):
    # Each CycleGAN draws other initial weights: the GPU's step no longer matches the CPU's.
    root = sabotaged("torch.manual_seed(seed)", "torch.seed()")
    result = gpu_check("--smoke", "--only", "environment,step", tmp_path / "out", root=root)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "gpu_check.sh: error: failed sections: step ")
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| 1e-3 | NO |" in report and "| step |" in report


def test_a_section_that_breaks_is_marked_fail_and_the_next_sections_still_run(sabotaged,
                                                                               tmp_path):
    root = sabotaged("    def floats(self):\n", "    def floats(self):\n        1 / 0\n")
    result = gpu_check("--smoke", "--only", "step,amp,environment", tmp_path / "out", root=root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "failed sections: step, amp " in result.stderr
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| section step | FAIL: ZeroDivisionError: division by zero |  | FAIL |" in report
    assert "| environment | 0 | passed |" in report
    assert "ZeroDivisionError" in (tmp_path / "out" / "step.log").read_text()
