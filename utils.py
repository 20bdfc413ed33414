"""What the scripts share, in five groups: errors and the command line; devices and
precision; training pieces (the replay buffer, the learning-rate schedule, same-size
batches); files (atomic writes, downloads, writes in background threads, weights); signals;
and the run's record (the loss log and the sample grids; its visdom dashboard is dashboard.py)."""
import argparse
import collections
import contextlib
import csv
import io
import logging
import math
import os
import platform
import random
import re
import signal
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image, ImageDraw
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid
from tqdm import tqdm

# Errors and the command line

class Direction(typing.NamedTuple):
    source: str  # the domain translated from
    target: str  # the domain translated into
    generator: str  # the network that does it


DIRECTIONS = {"A2B": Direction("A", "B", "G_A2B"), "B2A": Direction("B", "A", "G_B2A")}
# Our networks' names in the authors' checkpoints: their G_A reads domain A, and their D_A judges
# domain B (it sees G_A's output), where our D_A judges domain A.
AUTHORS_NAMES = {"G_A2B": "G_A", "G_B2A": "G_B", "D_A": "D_B", "D_B": "D_A"}


class UserError(Exception):
    """A mistake the user can fix: reported as one line, exit status 2."""


class RunFailure(Exception):
    """Training cannot go on (non-finite loss, full disk): one line, exit status 1."""


# Options of the authors' pytorch-CycleGAN-and-pix2pix that these scripts do not take, and what
# to do here instead (docs/migrating.md has the whole table).
AUTHORS_FLAGS = {
    "--name": "the run's folder is --output DIR (train.py) or --weights DIR (test.py)",
    "--checkpoints_dir": "the run's folder is --output DIR (train.py) or --weights DIR (test.py)",
    "--gpu_ids": "--device cuda, mps or cpu picks the device; several GPUs run under torchrun",
    "--model": "these scripts train and run CycleGAN only",
    "--no_dropout": "the generators have no dropout, their CycleGAN default: drop the flag",
    "--num_threads": "--workers N loads the data",
    "--display_id": "--no_visdom turns the dashboard off",
    "--display_server": "--visdom_server URL", "--display_port": "--visdom_port N",
    "--display_env": "the visdom environment is the output folder's name",
    "--display_freq": "--sample_every N (iterations)", "--print_freq": "--log_every N (iterations)",
    "--save_latest_freq": "--save_every N (iterations)",
    "--results_dir": "--results DIR",
    "--eval": "the generators always translate in eval mode",
    "--aspect_ratio": "images keep their own size",
}

# train.py's options for the networks and their training, which the authors' test.py also
# takes, and which test.py and evaluate.py read from the weights instead.
NETWORK_FLAGS = ("--netG", "--netD", "--n_layers_D", "--norm", "--init_type", "--init_gain",
                 "--input_nc", "--output_nc", "--gan_mode", "--lr_policy", "--n_blocks", "--ndf")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line and exit status 2, takes no
    abbreviations (`--eval` must not pick --eval_every or --eval_dims by accident), and says
    what to write instead of an option of the authors' that it does not take."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            given = [word.split("=")[0] for word in message.split(":", 1)[1].split()]
            theirs = next((flag for flag in given if flag in AUTHORS_FLAGS), None)
            network = next((flag for flag in given if flag in NETWORK_FLAGS), None)
            if theirs:
                message = f"{theirs} is an option of the authors' code: {AUTHORS_FLAGS[theirs]}"
            elif network:
                message = (f"{network} is an option of training (train.py): {self.prog} reads "
                           "the networks from the weights; drop it")
        fail(f"{self.prog}: error: {message}")


def print_any_file_name():
    """File names need not be UTF-8 (zip files from old Windows machines, old cameras, network
    shares): Python keeps their stray bytes as surrogates, which printing refuses with a
    traceback. The scripts show them as escapes instead; the files keep their bytes."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def fail(message, status=2):
    if message:
        print(message, file=sys.stderr)
    sys.exit(status)


def require(args, minimum, *names):
    """Raise a UserError naming the first of these options that is below `minimum` (None
    stands for a default still to be filled in)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise UserError(f"--{name} {value}: must be at least {minimum}")


def describe(error, limit=200):
    """An exception as one short line (torch's state_dict errors start with a header line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def report_skipped(skipped, limit=20):
    """One stderr line per file that will not be used, once, at start-up."""
    for path, reason in skipped[:limit]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"skipped {len(skipped) - limit} more files", file=sys.stderr)


def usable_cores():
    """The CPU cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_workers():
    """4 loader processes, or fewer on a machine with fewer usable cores."""
    return min(4, usable_cores())


def add_device_argument(parser):
    parser.add_argument("--device", default="auto",
                        help="auto (a CUDA GPU, else a Mac's GPU through MPS, else the CPU), cpu, "
                        "cuda, cuda:N or mps (default: auto)")


def add_workers_argument(parser, what):
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help=f"{what} worker processes; 0 loads in the main process (default: 4, "
                        "or the CPU count if lower)")


def default_output(dataroot):
    """Where a run on `dataroot` keeps its weights: output/<dataroot name>."""
    return os.path.join("output", os.path.basename(os.path.normpath(dataroot)))


def default_load_size(size):
    """The paper's resize before the random crop: 286 for 256-pixel crops, in proportion for
    others."""
    return size * 286 // 256


def run_sibling(script, *args):
    """Run another script of this repository with this Python; returns its exit status and
    the last line it wrote to stderr (its one-line error, if it failed)."""
    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, os.path.join(here, script), *map(str, args)]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = done.stderr.strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


# Devices and precision

def pick_device(name):
    """'auto' means a CUDA GPU, else Apple's MPS, else the CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        check_cuda(name, device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: {mps_unavailable()}; use --device cpu")
    elif device.type not in ("cpu", "mps"):
        raise UserError(f"--device {name}: not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def check_cuda(name, device):
    if not torch.cuda.is_available():
        raise UserError(f"--device {name}: this machine has no usable CUDA GPU; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.index is not None:
        # Else CUDA's context, cuDNN's handles and plain .cuda() calls land on GPU 0 as well.
        torch.cuda.set_device(device)


def mps_unavailable():
    """Why torch cannot use a Mac's GPU here, in torch's own terms."""
    if not torch.backends.mps.is_built():
        return "this PyTorch was built without MPS (Apple's Metal), so it cannot use a Mac's GPU"
    if platform.system() != "Darwin":
        return "MPS is Apple's Metal backend and runs on macOS only"
    return ("torch.backends.mps.is_available() is False: MPS needs a Mac with Apple silicon (or "
            "an AMD GPU) and macOS 12.3 or newer")


def synchronize(device):
    """Wait until the device has finished its queued work (for timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def empty_cache(device):
    """Give the memory the caching allocator holds back to the GPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def is_out_of_memory(error):
    """CUDA raises torch.OutOfMemoryError; MPS a RuntimeError that says "MPS backend out of
    memory"."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error))


def add_amp_argument(parser, training=True, what=None):
    what = what or ("mixed precision: bf16 autocast where the device supports it, else fp16 "
                    "(training then scales gradients); losses stay fp32" if training else
                    "the generator in mixed precision: bf16 autocast where the device supports "
                    "it, else fp16")
    parser.add_argument("--amp", nargs="?", const="on", default="auto",
                        choices=("auto", "on", "off"),
                        help=f"{what}. auto (the default) is on where bf16 runs natively: CUDA "
                        "GPUs with bf16 tensor cores, CPUs with AMX or AVX512-BF16; off elsewhere "
                        "(on MPS, on means fp16). Off is fp32, " + (
                            "whose convolutions run on TF32 tensor cores on those GPUs (10-bit "
                            "mantissas, far faster)" if training else
                            "true fp32 on GPUs too (no TF32): the same pixels on every machine")
                        + "; --amp alone means on (see docs/benchmarks.md)")


def use_amp(choice, device):
    """Resolve --amp auto|on|off for a device. auto is on where bf16 runs natively: GPUs with
    bf16 tensor cores and CPUs with bf16 instructions, where bf16 tracked fp32's losses, and
    translated within a few levels of fp32's pixels, faster (docs/benchmarks.md); elsewhere bf16
    is emulated and several times slower."""
    if choice == "auto":
        return native_bf16(device)
    return choice == "on"


def native_bf16(device):
    """bf16 in hardware: tensor cores of CUDA compute capability 8.0 (Ampere) or newer, or a CPU
    with bf16 instructions (`cpu_bf16`); not counted on MPS, whose bf16 needs macOS 14. Not
    torch.cuda.is_bf16_supported(), which also counts emulation (T4, V100) and asks about the
    current device rather than this one."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_bf16() is not None


def cpu_bf16():
    """This CPU's bf16 instructions as torch reports them: "AMX" (Intel Xeon since Sapphire
    Rapids), "AVX512-BF16" (Intel Cooper Lake, AMD Zen 4 and later), or None, also where torch
    is too old to say (torch.cpu.get_capabilities)."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    capabilities = get_capabilities() if get_capabilities else {}
    if capabilities.get("amx_bf16"):
        return "AMX"
    return "AVX512-BF16" if capabilities.get("avx512_bf16") else None


def add_compile_argument(parser):
    parser.add_argument("--compile", nargs="?", const="on", default="auto",
                        choices=("auto", "on", "off", "graphs"),
                        help="torch.compile the networks: faster iterations after minutes of "
                        "compiling at start-up (cached for later runs). auto (the default) "
                        f"compiles runs of at least {COMPILE_MIN_ITERATIONS} iterations where a "
                        "compiler works (a C++ compiler; Triton on CUDA); not on MPS. graphs "
                        "also replays each network's kernels as CUDA graphs (torch.compile's "
                        "reduce-overhead mode), against the launch overhead of small batches; "
                        "CUDA only, elsewhere it compiles without them. Where compiling is "
                        "impossible, training runs eager, saying why; --compile alone means on "
                        "(see docs/benchmarks.md)")


# Compiling cold cost 103-157 s on a 2-core CPU (13 s from a warm cache), and saved 0.04-1.7 s
# per iteration on the CPUs measured: every configuration there repaid a cold compile within
# 2,400 iterations (docs/benchmarks.md). Shorter runs (trials, tests) stay eager.
COMPILE_MIN_ITERATIONS = 5000
# The same in time, for runs with a time budget: the longest repayment measured took 99 minutes
# (990 iterations of 6 s at 256x256 in bf16 on a 2-core AMD EPYC).
COMPILE_MIN_SECONDS = 2 * 3600


def compile_problem(device):
    """Why torch.compile cannot compile for `device` here, or None. Inductor builds CPU kernels
    with a C++ compiler, and CUDA kernels with Triton, whose launchers need a C compiler."""
    if device.type == "mps":
        return "torch.compile's MPS backend is a prototype"
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            return "Triton is not installed"
    try:
        from torch._inductor import cpp_builder
        cpp_builder.get_cpp_compiler()
    except Exception as e:  # InvalidCxxCompiler, or anything a broken toolchain raises
        return f"no working C++ compiler ({describe(e)})"
    return None


def use_compile(choice, device, iterations, seconds=None):
    """Resolve --compile auto|on|off|graphs for a run of `iterations` more iterations on
    `device`, or of `seconds` more under a time budget: (torch.compile's mode, or None for
    eager; a note on what was not done, or None). auto does not pick graphs: no GPU has timed
    them against plain compiling yet."""
    if choice == "off":
        return None, None
    problem = compile_problem(device)
    if problem:
        return None, problem
    if choice == "auto" and seconds is not None and seconds < COMPILE_MIN_SECONDS:
        return None, (f"{seconds / 60:.0f} minutes of time budget are too few to repay "
                      f"compiling (--compile auto compiles from {COMPILE_MIN_SECONDS // 3600} "
                      "hours)")
    if choice == "auto" and seconds is None and iterations < COMPILE_MIN_ITERATIONS:
        return None, (f"{iterations} iterations are too few to repay compiling (--compile auto "
                      f"compiles from {COMPILE_MIN_ITERATIONS})")
    if choice == "graphs" and device.type != "cuda":
        return "default", "CUDA graphs need a CUDA GPU; compiled without them"
    return ("reduce-overhead" if choice == "graphs" else "default"), None


def eager_where_compiling_fails():
    """Let torch.compile run a network eager where compiling it fails at any later point (a
    compiler that breaks mid-run, a kernel it cannot build), saying so in one line, once,
    instead of dynamo's page of traceback."""
    torch._dynamo.config.suppress_errors = True
    logger = logging.getLogger("torch._dynamo.convert_frame")
    if not any(isinstance(f, _CompileFailureLine) for f in logger.filters):
        logger.addFilter(_CompileFailureLine())


class _CompileFailureLine(logging.Filter):
    """Turns dynamo's "WON'T CONVERT" warnings into one line naming the first error."""

    def __init__(self):
        super().__init__()
        self.said = False

    def filter(self, record):
        message = record.getMessage()
        if "WON'T CONVERT" not in message:
            return True
        if not self.said:
            self.said = True
            errors = [line for line in message.splitlines()
                      if re.match(r"[\w.]+(Error|Exception)\b.*: ", line)]
            why = re.sub(r"^[\w.]*\.", "", errors[-1]) if errors else "see TORCHDYNAMO_VERBOSE=1"
            tqdm.write(f"warning: compiling failed, so the networks that could not be compiled "
                       f"run eager ({why[:200]})", file=sys.stderr)
        return False


def set_fp32_precision(precision):
    """How CUDA GPUs run fp32 convolutions and matrix products, process-wide: "tf32"
    (TensorFloat-32 tensor cores on compute capability 8.0 and newer: 10-bit mantissas, several
    times faster) or "ieee" (true fp32). train.py and benchmark.py train with "tf32", whose
    rounding is far below the noise of GAN training; test.py, evaluate.py and the GPU check's
    comparisons use "ieee", so that fp32 means the CPU's numbers. Other devices are not
    affected. torch 2.9 and newer take it as fp32_precision, older ones as allow_tf32 flags."""
    if hasattr(torch.backends.cudnn, "conv"):
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32


def precision_name(dtype):
    return "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


def amp_dtype(device):
    """The --amp precision: bf16 where the device supports it, else fp16 (with gradient
    scaling). On MPS fp16, the dtype of PyTorch's MPS autocast on every macOS it supports."""
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.float16 if device.type == "mps" else torch.bfloat16


# Training pieces

class ImagePool:
    """The replay buffer of Shrivastava et al. used by CycleGAN for the discriminators.

    While it holds fewer than `pool_size` images it stores and returns each new image;
    once full, with probability 0.5 it returns a stored image and keeps the new one in its
    place, else it returns the new image. Decided per image; `pool_size=0` disables it.
    """

    def __init__(self, pool_size, seed=0):
        self.pool_size = pool_size
        self.images = []
        self.rng = random.Random(seed)

    def query(self, images):
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            # Stored as copies: a view would keep the whole batch of generator outputs it
            # came from alive, in memory and in every checkpoint.
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                i = self.rng.randint(0, self.pool_size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        # Stored images may be of another precision (a run resumed with or without --amp).
        return torch.cat([image.to(images.dtype) for image in out], 0)

    def state_dict(self):
        return {"images": list(self.images), "rng": self.rng.getstate()}

    def load_state_dict(self, state):
        self.images = list(state["images"])
        self.rng.setstate(_as_random_state(state["rng"]))


def _as_random_state(state):
    # A saved random.Random state comes back from torch.load with lists where Python
    # wants tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def same_size_batches(items, batch_size, pin=False):
    """Stack consecutive images of one size into batches of up to batch_size: yields each
    batch with the indices that came with its images. `items` gives (image, index) pairs;
    an image of None (an unreadable file, already reported) is left out. With `pin` (for a
    CUDA GPU), batches are stacked straight into page-locked memory: only from there does a
    copy to the GPU leave the host free, and a stack of pinned images is not pinned."""
    images, indices = [], []
    for image, i in items:
        if image is None:
            continue
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield _stack(images, pin), indices
            images, indices = [], []
        images.append(image)
        indices.append(i)
    if images:
        yield _stack(images, pin), indices


def _stack(images, pin):
    batch = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=pin)
    return torch.stack(images, out=batch)


LR_POLICIES = ("linear", "step", "plateau", "cosine")


def budget_lr_factor(seconds, budget):
    """The learning-rate factor `seconds` into a time budget: 1 for its first half, then a
    straight line to 0 at its end."""
    return min(1.0, max(0.0, 2 * (1 - seconds / budget)))


def parse_duration(text):
    """Seconds in a duration such as 1h, 90m, 1h30m, 45s or 3600 (seconds); for argparse."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?",
                         text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 1h, 90m, 1h30m or "
                                         "45s")
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def lr_factor(policy, epoch, n_epochs, n_epochs_decay, lr_decay_iters=50):
    """The authors' learning-rate factor for 0-based `epoch`, as their schedulers give it
    after `epoch` steps, one per epoch. linear: 1 for the first `n_epochs` epochs, then a
    straight line that would reach 0 one epoch after the last of the `n_epochs_decay` that
    follow (the last runs at 1/(n_epochs_decay + 1)). step: x0.1 every `lr_decay_iters`
    epochs. plateau: their CycleGAN steps ReduceLROnPlateau (factor 0.2, patience 5) with a
    metric that is always 0, which never improves after the first epoch: x0.2 after 7
    epochs, then every 6. cosine: half a cosine from 1 to 0 over `n_epochs`, rising after."""
    if policy == "step":
        return 0.1 ** (epoch // lr_decay_iters)
    if policy == "plateau":
        return 0.2 ** (max(0, epoch - 1) // 6)
    if policy == "cosine":
        return (1 + math.cos(math.pi * epoch / n_epochs)) / 2
    return 1.0 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1)


# Files: atomic writes, downloads, writes in the background, weights

def download(url, path, hint):
    """Fetch `url` into `path` with a progress bar. An interrupted download stays in
    path.part and continues from there next time; `path` appears only when complete.
    Failures raise RunFailure (exit 1) ending with `hint`."""
    import http.client
    import urllib.error
    import urllib.request
    part = path + ".part"
    start = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 206:  # the server sent the whole file
                start = 0
            total = start + int(response.headers.get("Content-Length") or 0)
            with open(part, "ab" if start else "wb") as f, tqdm(
                    total=total or None, initial=start, unit="B", unit_scale=True,
                    desc=os.path.basename(path)) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and start):  # 416 to a range from the end: the file was complete
            raise RunFailure(f"could not download {url} ({e.code} {e.reason}); {hint}")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise RunFailure(f"could not download {url} ({reason}); run again to continue; {hint}")
    if total and os.path.getsize(part) < total:  # the server closed the connection early
        raise RunFailure(f"could not download {url} (cut off at {os.path.getsize(part)} of "
                         f"{total} bytes); run again to continue; {hint}")
    os.replace(part, path)


def atomic_save(obj, path):
    """torch.save to a temporary name, then rename: a kill never leaves a truncated file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text, path):
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write(path, write):
    """write(f) into a temporary file, synced, then renamed to `path`."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


LOCK_FILE = ".lock"


@contextlib.contextmanager
def claimed(folder, program, option):
    """Hold `folder` (the value of `option`) for this process while the `with` block runs:
    a second train.py or test.py writing there (a requeued job, a second terminal) stops with
    one line naming this one. The lock is the kernel's (flock, or msvcrt's on Windows) on
    FOLDER/.lock, so a process that is killed, even with SIGKILL, releases it; the file only
    says who holds it, and is removed on release. A folder this made and leaves empty is
    removed again."""
    made = not os.path.isdir(folder)
    path = os.path.join(folder, LOCK_FILE)
    try:
        os.makedirs(folder, exist_ok=True)
        handle = _locked(path, folder)
    except OSError as e:
        raise UserError(f"{option} {folder}: cannot write there ({e.strerror or e})")
    try:
        handle.write(f"{program}, process {os.getpid()} on {platform.node()}\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):  # Windows keeps an open file
            os.remove(path)
        handle.close()
        if made and not os.listdir(folder):
            os.rmdir(folder)


def _locked(path, folder):
    """FOLDER/.lock, open and locked. A holder removes the file before it lets go, so a lock
    won on a file no longer at `path` is tried again on the new one."""
    while True:
        handle = open(path, "a+", encoding="utf-8", errors="backslashreplace")
        try:
            _lock(handle, folder)
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                handle.seek(0)
                handle.truncate()
                return handle
        except FileNotFoundError:
            pass
        except BaseException:
            handle.close()
            raise
        handle.close()


def _lock(handle, folder):
    try:
        if os.name == "nt":
            import msvcrt
            handle.seek(1 << 20)  # a byte past the holder's line, which others must read
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        raise UserError(f"{folder} is in use by {holder}; wait for it to end, or write "
                        "elsewhere") from None
    except OSError as e:  # a file system without locks (some network and FUSE mounts)
        print(f"warning: cannot lock {folder} ({e.strerror or e}); make sure that no other "
              "run writes there", file=sys.stderr)


class Behind:
    """Jobs done by `threads` background threads while the caller goes on, at most `limit` of
    them unfinished: `submit` then waits for the oldest, so that work handed over, and the
    tensors it holds, cannot pile up faster than it is done. Leaving the `with` block waits
    for every job handed over (also on an error: none is lost), then raises the first
    failure."""

    def __init__(self, threads, limit):
        self.pool, self.limit = ThreadPoolExecutor(max_workers=threads), limit
        self.pending = collections.deque()

    def __enter__(self):
        return self

    def submit(self, fn, *args):
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.limit:
            self.pending.popleft().result()

    def __exit__(self, kind, error, traceback):
        self.pool.shutdown(wait=True)
        if kind is None:
            for job in self.pending:
                job.result()


def map_tensors(fn, state):
    """`state` (a tensor, or nested dicts, lists and tuples holding some) with fn applied to
    every tensor in it."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return type(state)((key, map_tensors(fn, value)) for key, value in state.items())
    if isinstance(state, (list, tuple)):
        return type(state)(map_tensors(fn, value) for value in state)
    return state


def on_cpu(state):
    """A state_dict, or nested dicts, lists and tuples of them, with every tensor on the CPU."""
    return map_tensors(torch.Tensor.cpu, state)


def load_weights(path, map_location="cpu"):
    """torch.load that never unpickles code: only tensors and plain containers."""
    return torch.load(path, map_location=map_location, weights_only=True)


# Signals

class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM (what cluster schedulers send before a job's
    time runs out) only set `received`, so the training loop can save a checkpoint at the
    next step boundary and exit; a second signal acts as usual, unless `second_quits` is
    False (under torchrun, whose agent follows a Ctrl-C with a SIGTERM of its own)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, second_quits=True):
        self.second_quits = second_quits

    def __enter__(self):
        self.received = None
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.received = self.received or signal.Signals(signum)
        if self.second_quits:
            self._restore()

    def _restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __exit__(self, *exc):
        self._restore()


def ignore_stop_signals(worker_id):
    """DataLoader worker_init_fn: Ctrl-C and SIGTERM reach every process of the job, but only
    the main process should act on them (save a checkpoint, then stop the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# The run's record: the CSV logs and the sample grids

class LossLog:
    """A CSV log of `fields` with a row per iteration it was written at: losses.csv (the mean
    losses over each logging interval) or metrics.csv (FID and KID)."""

    def __init__(self, path, fields):
        self.path, self.fields = path, fields

    def truncate_after(self, iteration):
        """Drop rows written after the checkpoint a run resumes from, so the log matches
        the weights; a half-written last line from a kill goes too."""
        if not os.path.exists(self.path):
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if _row_iteration(r, self.fields) <= iteration]
        atomic_write_text(_csv_text(self.fields, rows), self.path)

    def rows(self):
        """The complete rows written so far, as numbers."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if _row_iteration(r, self.fields) < float("inf")]
        return [{k: int(r[k]) if k in ("iteration", "epoch") else float(r[k]) for k in self.fields}
                for r in rows]

    def append(self, row):
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row[k]) for k in self.fields})


def _row_iteration(row, fields):
    try:
        complete = all(row.get(k) not in (None, "") for k in fields)
        return int(row["iteration"]) if complete else float("inf")
    except ValueError:
        return float("inf")


def _csv_text(fields, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


VISUAL_NAMES = ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")


def visuals_grid(visuals):
    """The six images as one [0, 1] grid: real_A, fake_B, rec_A over real_B, fake_A, rec_B;
    A and B images of different sizes (train.py --preprocess none) padded in white, grayscale
    ones (--input_nc 1 or --output_nc 1) shown in RGB."""
    images = [visuals[k][0].float().cpu().expand(3, -1, -1) for k in VISUAL_NAMES]
    height, width = (max(image.shape[i] for image in images) for i in (1, 2))
    images = torch.stack([torch.nn.functional.pad(
        image, (0, width - image.shape[2], 0, height - image.shape[1]), value=1.0)
        for image in images])
    return make_grid(images * 0.5 + 0.5, nrow=3, padding=2)


def save_visuals(visuals, path, min_tile=128, label_height=16, gap=2):
    """The six images as a PNG, each under its name; small crops are enlarged (nearest
    neighbour) to at least `min_tile` pixels wide, so that a 64x64 sample can be seen."""
    tiles = [to_pil_image((visuals[name][0].float().cpu() * 0.5 + 0.5).clamp(0, 1))
             for name in VISUAL_NAMES]
    scale = max(1, math.ceil(min_tile / max(tile.width for tile in tiles)))
    width = max(tile.width for tile in tiles) * scale
    height = max(tile.height for tile in tiles) * scale
    sheet = Image.new("RGB", (3 * width + 4 * gap, 2 * (label_height + height) + 3 * gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, tile) in enumerate(zip(VISUAL_NAMES, tiles)):
        x, y = gap + (i % 3) * (width + gap), gap + (i // 3) * (label_height + height + gap)
        draw.text((x + 2, y + 2), name, fill="black")
        sheet.paste(tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST),
                    (x, y + label_height))
    sheet.save(path)
