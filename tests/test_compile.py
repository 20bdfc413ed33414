"""--compile auto|on|off|graphs: which runs compile, what train.py says, and how it trains eager
where compiling is impossible or fails."""
import copy
import types

import pytest
import torch

import utils
from conftest import TINY, load_script, run_script
from cyclegan import CycleGAN
from utils import COMPILE_MIN_ITERATIONS, use_compile

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
HORSE2ZEBRA_RUN = 200 * 1334  # the default 100 + 100 epochs of its 1,334 horses


@pytest.fixture
def compiler_works(monkeypatch):
    monkeypatch.setattr(utils, "compile_problem", lambda device: None)


@pytest.fixture
def no_compiler():
    """torch's C++ compiler setting pointed at a program that fails, as CXX=/bin/false does;
    with torch's own config.patch, as pytest 9.2's monkeypatch deletes the setting on undo."""
    import torch._inductor.config
    with torch._inductor.config.patch({"cpp.cxx": (None, "/bin/false")}):
        yield


@pytest.fixture
def fresh_dynamo():
    """Dynamo remembers the functions it failed to compile, and suppress_errors is global."""
    with torch._dynamo.config.patch(suppress_errors=False):
        torch._dynamo.reset()
        yield
        torch._dynamo.reset()


def test_auto_compiles_the_default_horse2zebra_run(compiler_works):
    assert use_compile("auto", CPU, HORSE2ZEBRA_RUN) == ("default", None)


def test_auto_leaves_a_run_too_short_to_repay_compiling_eager(compiler_works):
    mode, note = use_compile("auto", CPU, COMPILE_MIN_ITERATIONS - 1)
    assert mode is None and f"{COMPILE_MIN_ITERATIONS - 1} iterations are too few" in note
    assert use_compile("auto", CPU, COMPILE_MIN_ITERATIONS) == ("default", None)


def test_on_compiles_any_run_and_off_none(compiler_works):
    assert use_compile("on", CPU, 1) == ("default", None)
    assert use_compile("off", CPU, HORSE2ZEBRA_RUN) == (None, None)


def test_without_a_working_cpp_compiler_even_on_runs_eager_saying_why(no_compiler):
    mode, note = use_compile("on", CPU, HORSE2ZEBRA_RUN)
    assert mode is None and note.startswith("no working C++ compiler")


def test_mps_is_not_compiled():
    mode, note = use_compile("auto", torch.device("mps"), HORSE2ZEBRA_RUN)
    assert mode is None and "MPS" in note


def test_graphs_are_cuda_graphs_on_cuda_and_plain_compiling_elsewhere(compiler_works):
    assert use_compile("graphs", CUDA, 1) == ("reduce-overhead", None)
    assert use_compile("graphs", CPU, 1) == ("default",
                                             "CUDA graphs need a CUDA GPU; compiled without them")
    assert use_compile("auto", CUDA, HORSE2ZEBRA_RUN) == ("default", None)  # not yet timed


def test_cuda_without_triton_runs_eager(monkeypatch):
    import torch.utils._triton
    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    assert use_compile("on", CUDA, HORSE2ZEBRA_RUN) == (None, "Triton is not installed")


def test_the_start_up_line_of_a_long_run_says_compiled(compiler_works):
    train_py = load_script("train.py")
    args, _ = train_py.parse_args(["--dataroot", "datasets/horse2zebra"])
    compiled = []
    model = types.SimpleNamespace(compile=compiled.append, graphs=False)
    launch = types.SimpleNamespace(device=CPU, world_size=1)
    how = train_py.compile_if_it_pays(model, args, launch, train_py.Position(), 1334)
    assert compiled == ["default"] and how.startswith("compiled")


def test_a_short_run_says_that_it_trains_eager_and_why(dataset, tmp_path):
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *TINY,
                        "--n_epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "(fp32; eager: 7 iterations are too few to repay compiling" in result.stdout


def test_compile_on_without_a_compiler_trains_eager_and_says_why(dataset, tmp_path,
                                                                  no_compiler):
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *TINY,
                        "--n_epochs", "1", "--compile", "on")
    assert result.returncode == 0, result.stderr
    assert "eager: no working C++ compiler" in result.stdout


def test_a_compile_that_fails_after_the_check_trains_eager_with_one_line(
        dataset, tmp_path, compiler_works, no_compiler, fresh_dynamo):
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *TINY,
                        "--n_epochs", "1", "--compile", "on")
    assert result.returncode == 0, result.stderr
    assert "compiled" in result.stdout
    failures = [line for line in result.stderr.splitlines() if "compiling failed" in line]
    assert len(failures) == 1 and "InvalidCxxCompiler" in failures[0]
    assert "Traceback" not in result.stderr


def test_the_cuda_graphs_path_gives_the_eager_losses_in_fp32_and_keeps_the_keys(fresh_dynamo):
    model = CycleGAN(device="cpu", ngf=4, ndf=4, n_blocks=1, pool_size=2)
    eager = copy.deepcopy(model)
    model.compile("reduce-overhead")  # on a CPU, inductor compiles without the graphs
    model.graphs = True  # and the step marks each new step, as on a GPU
    for name, net in model.networks().items():  # no "_orig_mod." prefixes
        assert list(net.state_dict()) == list(eager.networks()[name].state_dict())
    batches = torch.Generator().manual_seed(0)
    for _ in range(2):
        real_A, real_B = (torch.rand(1, 3, 32, 32, generator=batches) * 2 - 1 for _ in "AB")
        ours, theirs = model.step(real_A, real_B).floats(), eager.step(real_A, real_B).floats()
        assert ours == pytest.approx(theirs, rel=1e-4)
