"""What a CUDA GPU does with this repository, in about ten minutes (not yet run on a GPU): is
it correct there, and how fast is it. Writes OUT/gpu_check.md, each command's log and each
benchmark's JSON beside it; `bash scripts/gpu_check.sh` runs this file.

    bash scripts/gpu_check.sh OUT                     on a machine with a CUDA GPU
    bash scripts/gpu_check.sh --smoke OUT             every section at tiny sizes on the CPU,
                                                      so that CI keeps this script working
    bash scripts/gpu_check.sh --only tiles,speed OUT  some sections again, in the same OUT

Sections, in order: environment; step (one fp32 step against the CPU's, true fp32); amp (bf16
and fp16 for some steps); resume (a run resumed against an uninterrupted one, and that a GPU
run saves CPU tensors); torchrun (one process against a plain run; two with NCCL where two
GPUs exist); translate (test.py against the CPU in fp32 and bf16, page-locked batches);
folder (test.py over 512 images at batch 16: images/s with loading and PNG writing); tiles (a
12-megapixel photo whole and tiled: time, peak memory, difference); batches (8 1080p frames in
sub-batches that fit, against tiles); evaluate (evaluate.py against the CPU); speed
(benchmark.py for batch 1, 4 and 8 in fp32, bf16, bf16 + channels_last and, at batch 1, bf16 +
compile and bf16 + compile with CUDA graphs; the authors' step; translation at batch 16); video
(frames/s at batch 1 and 8). Every section runs even when one before it failed; the report is
rewritten after each, so that a run cut short keeps what it found. A failed check is NO in the
report, a section that broke is FAIL with its error's last line (the whole traceback in
OUT/<section>.log), and the script then exits with status 1 naming them.
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import models  # noqa: E402
import tiles  # noqa: E402
from cyclegan import CycleGAN  # noqa: E402
from utils import (ArgumentParser, map_tensors, same_size_batches,  # noqa: E402
                   set_fp32_precision)

# Dense bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, by device name.
PEAKS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.5, "H100 PCIe": 756.5,
         "H200": 989.4, "A100": 312.0}
# Runs compared with each other are fp32. On the CPU they are bit-identical. On CUDA they
# cannot be: ReflectionPad2d's backward has only an atomicAdd kernel, which adds in a varying
# order (torch.use_deterministic_algorithms refuses it), so the losses are compared instead.
RUN_TOLERANCE = 1e-2
# test.py in bf16 against the CPU in fp32, mean over all pixel values, in grey levels (0-255):
# bf16 alone moved a random ngf-64 generator's pixels by 1.0 on average on a CPU, a trained
# one's by 0.3 (scripts/tile_precision.py); a broken path moves them by tens.
BF16_MEAN_GREY = 2.0
SECTIONS = ("environment", "step", "amp", "resume", "torchrun", "translate", "folder", "tiles",
            "batches", "evaluate", "speed", "video")


class CheckError(Exception):
    """A section could not finish; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Setup:
    out: str
    device: str
    smoke: bool
    size: int  # training and benchmark crops
    arch: tuple  # network flags for the scripts
    batches: tuple
    amp_steps: int
    iters: int
    images: int  # training images per domain in the generated dataset
    frames: int
    photo: tuple  # (width, height) of the large photo of the tiles section

    @property
    def ngf_blocks(self):
        flags = dict(zip(self.arch[::2], self.arch[1::2]))
        return {"ngf": int(flags.get("--ngf", 64)), "n_blocks": int(flags.get("--n_blocks", 9))}


def make_setup(smoke, out):
    if smoke:
        return Setup(out, "cpu", True, 32, ("--ngf", "8", "--ndf", "8", "--n_blocks", "2"), (1,),
                     20, 2, 6, 12, (1100, 700))
    return Setup(out, "cuda", False, 256, (), (1, 4, 8), 50, 20, 24, 240, (4032, 3024))


class Report:
    """gpu_check.md: the machine, the correctness table, the speed and translation tables and
    each section's time, rewritten whole after every section."""

    def __init__(self, path, title):
        self.path, self.title = path, title
        self.parts = {part: [] for part in ("environment", "correctness", "speed",
                                            "translation", "sections")}
        self.failures = 0

    def check(self, what, result, tolerance, passed):
        verdict = passed if isinstance(passed, str) else ("yes" if passed else "NO")
        self.failures += verdict in ("NO", "FAIL")
        self.parts["correctness"].append(f"| {what} | {result} | {tolerance} | {verdict} |")

    def add(self, part, line):
        self.parts[part].append(line)

    def write(self):
        tables = {
            "correctness": ("## Correctness", "| check | result | tolerance | pass |"),
            "speed": ("## Speed", "| command | batch | s/iteration, median (min-max) | "
                      "iterations/s | TFLOP/s (share of the bf16 peak) | peak memory | "
                      "translation images/s |"),
            "translation": ("## Translation", "| what | result |"),
            "sections": ("## Sections", "| section | seconds | result |"),
        }
        lines = [f"# {self.title}", "", *self.parts["environment"]]
        for part, (heading, header) in tables.items():
            if self.parts[part]:
                columns = header.count("|") - 1
                lines += ["", heading, "", header, "|" + " --- |" * columns, *self.parts[part]]
        with open(self.path, "w") as f:
            f.write("\n".join(lines) + "\n")


def run(s, log, *command, env=None):
    """A command run from the repository root, its output in OUT/<log>.log; a failure raises
    a CheckError with the log's last line."""
    path = os.path.join(s.out, f"{log}.log")
    with open(path, "w") as f:
        done = subprocess.run([str(c) for c in command], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if done.returncode:
        with open(path) as f:
            last = ([line.strip() for line in f if line.strip()] or ["no output"])[-1]
        raise CheckError(f"{os.path.basename(str(command[1]))} failed: {last} (see {path})")
    return path


def python(*args):
    return [sys.executable, *args]


# The generated inputs: a dataset, trained runs, a video

def data(s):
    """A small dataset of random images of several sizes, made once in OUT/data."""
    root = os.path.join(s.out, "data")
    if os.path.isdir(root):
        return root
    rng = np.random.default_rng(0)
    for folder in ("trainA", "trainB", "testA", "testB"):
        os.makedirs(os.path.join(root, folder))
        for i in range(s.images if folder.startswith("train") else 3):
            pixels = rng.integers(0, 256, (72 + 8 * i, 64 + 4 * i, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, folder, f"{i}.png"))
    return root


def train_command(s, output, epochs):
    """train.py in fp32 (its convolutions in TF32 on CUDA), one epoch at the full rate and the
    rest decaying, so that a one-epoch run resumed with --n_epochs_decay 1 follows the
    two-epoch schedule."""
    return python("train.py", "--dataroot", data(s), "--device", s.device, "--size", s.size,
                  *s.arch, "--no_visdom", "--workers", "2", "--log_every", "1",
                  "--save_every", "1000", "--amp", "off", "--output", output,
                  "--n_epochs", "1", "--n_epochs_decay", str(int(epochs) - 1))


# One CPU thread on the CPU: multi-threaded kernels differ in the last bit now and then.
def run_env(s):
    return {"OMP_NUM_THREADS": "1"} if s.device == "cpu" else {}


def trained(s, name):
    """OUT/<name>, a 2-epoch run, trained once (kept for --only reruns in the same OUT)."""
    output = os.path.join(s.out, name)
    if not os.path.exists(os.path.join(output, "done")):
        shutil.rmtree(output, ignore_errors=True)
        run(s, name, *train_command(s, output, 2), env=run_env(s))
        open(os.path.join(output, "done"), "w").close()
    return output


def translated(s, name, device, *flags):
    """test.py's results of the straight run's generators on the test images, made once."""
    results = os.path.join(s.out, name)
    if not os.path.exists(os.path.join(results, "index.html")):
        run(s, name, *python("test.py", "--dataroot", data(s), "--weights", trained(s, "straight"),
                             "--results", results, "--device", device, *flags))
    return results


# Correctness

def section_environment(s, report):
    if s.device == "cuda":
        smi = shutil.which("nvidia-smi")
        driver = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip() if smi else ""
        p = torch.cuda.get_device_properties(0)
        where = (f"{p.name}, compute capability {p.major}.{p.minor}, "
                 f"{p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s), driver "
                 f"{driver or 'unknown'}, CUDA {torch.version.cuda}, cuDNN "
                 f"{torch.backends.cudnn.version()}")
    else:
        where = (f"CPU {platform.processor() or platform.machine()}, "
                 f"{torch.get_num_threads()} threads")
    report.add("environment", f"- {where}")
    report.add("environment", f"- torch {torch.__version__}, Python {platform.python_version()}")
    report.add("environment", "- fp32: TF32 convolutions in training (train.py, benchmark.py), "
               "true fp32 in test.py, evaluate.py and this check's comparisons")


def step_losses(s, device, batches, steps, dtype=None):
    model = CycleGAN(device=device, seed=0, amp=dtype is not None, **s.ngf_blocks,
                     ndf=s.ngf_blocks["ngf"])
    if dtype is not None:  # both paths, whatever --amp auto would pick on this device
        model.amp_dtype = dtype
        model.scaler = torch.amp.GradScaler(model.device.type, enabled=dtype == torch.float16)
    before = [p.clone() for p in model.G_A2B.parameters()]
    losses = [model.step(*batches[i % len(batches)]).floats() for i in range(steps)]
    moved = any(not torch.equal(p, q) for p, q in zip(before, model.G_A2B.parameters()))
    return losses, moved


def relative_difference(a, b, names):
    return max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-8) for x, y in zip(a, b) for k in names)


def random_batches(s, n=2):
    g = torch.Generator().manual_seed(0)
    return [[torch.rand(1, 3, s.size, s.size, generator=g) * 2 - 1 for _ in "AB"]
            for _ in range(n)]


def section_step(s, report):
    batches = random_batches(s)
    here, cpu = (step_losses(s, device, batches, 2)[0] for device in (s.device, "cpu"))
    difference = relative_difference(here, cpu, here[0])
    report.check(f"fp32 on {s.device} against the CPU, 2 steps from the same weights and "
                 "inputs (true fp32)", f"largest relative loss difference {difference:.1e}",
                 "1e-3", difference <= 1e-3)


def section_amp(s, report):
    batches = random_batches(s)
    for dtype in (torch.bfloat16, torch.float16):
        losses, moved = step_losses(s, s.device, batches, s.amp_steps, dtype)
        finite = all(math.isfinite(v) for step in losses for v in step.values())
        # fp16's gradient scaler skips the first steps, whose scaled gradients overflow; it
        # must find a scale that lets the weights move.
        report.check(f"{str(dtype).removeprefix('torch.')} autocast, {s.amp_steps} steps",
                     f"losses finite: {finite}; weights changed: {moved}; last loss_G "
                     f"{losses[-1]['loss_G']:.3f}", "finite, weights change", finite and moved)


def read_losses(output):
    with open(os.path.join(output, "losses.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def weight_difference(a, b):
    """The largest difference between the weights of two training outputs."""
    largest = 0.0
    for name in ("G_A2B", "G_B2A", "D_A", "D_B"):
        x, y = (torch.load(os.path.join(d, f"net{name}.pth"), weights_only=True) for d in (a, b))
        largest = max([largest] + [(x[k] - y[k]).abs().max().item() for k in x])
    return largest


def compare_runs(s, report, output, what):
    """A run against the uninterrupted one: bit-identical weights on the CPU; on CUDA the
    logged losses within RUN_TOLERANCE."""
    straight = trained(s, "straight")
    mine, theirs = read_losses(output), read_losses(straight)
    names = [k for k in theirs[0] if k.startswith("loss")]
    same_length = len(mine) == len(theirs)
    losses = relative_difference(mine, theirs, names) if same_length else float("inf")
    weights = weight_difference(output, straight)
    if s.device == "cpu":
        tolerance, passed = "bit-identical weights", same_length and weights == 0
    else:
        tolerance, passed = f"losses {RUN_TOLERANCE:g} (see gpu_check.py)", losses <= RUN_TOLERANCE
    report.check(f"{what}, against an uninterrupted run on {s.device} (fp32)",
                 f"{len(mine)} logged iterations, largest relative loss difference "
                 f"{losses:.1e}, largest weight difference {weights:.1e}", tolerance, passed)


def section_resume(s, report):
    output = os.path.join(s.out, "resumed")
    shutil.rmtree(output, ignore_errors=True)
    run(s, "first_epoch", *train_command(s, output, 1), env=run_env(s))
    run(s, "resumed", *python("train.py", "--dataroot", data(s), "--output", output, "--resume",
                              "--n_epochs_decay", "1"), env=run_env(s))
    compare_runs(s, report, output, "one epoch, then --resume for the second")
    devices = set()
    for name in ("netG_A2B.pth", "checkpoint.pth"):
        state = torch.load(os.path.join(output, name), weights_only=True)
        map_tensors(lambda t: devices.add(t.device.type), state)
    report.check(f"files saved by a run on {s.device} load without map_location",
                 f"tensor devices: {', '.join(sorted(devices))}", "cpu", devices == {"cpu"})


def section_torchrun(s, report):
    torchrun = python("-m", "torch.distributed.run", "--standalone")
    output = os.path.join(s.out, "torchrun")
    shutil.rmtree(output, ignore_errors=True)
    run(s, "torchrun", *torchrun, "--nproc_per_node=1", *train_command(s, output, 2)[1:],
        env=run_env(s))
    compare_runs(s, report, output, "torchrun --nproc_per_node=1")
    if s.device == "cuda" and torch.cuda.device_count() < 2:
        report.check("torchrun --nproc_per_node=2 (NCCL)", "one GPU here", "", "skipped")
        return
    output = os.path.join(s.out, "torchrun2")
    shutil.rmtree(output, ignore_errors=True)
    log = run(s, "torchrun2", *torchrun, "--nproc_per_node=2", *train_command(s, output, 2)[1:],
              env=run_env(s))
    with open(log) as f:
        same = "the 2 processes ended with identical weights" in f.read()
    backend = "NCCL" if s.device == "cuda" else "gloo"
    report.check(f"torchrun --nproc_per_node=2 ({backend}), 2 epochs",
                 f"finished; identical weights in both processes: {same}", "finishes, same "
                 "weights", same)


def grey_levels(a, b):
    """Differences between the PNGs of two results folders, in grey levels: largest, mean."""
    largest, total, count = 0, 0.0, 0
    for direction in ("A2B", "B2A"):
        for name in sorted(os.listdir(os.path.join(a, direction))):
            x, y = (np.asarray(Image.open(os.path.join(r, direction, name)), dtype=int)
                    for r in (a, b))
            largest = max(largest, int(np.abs(x - y).max()))
            total, count = total + np.abs(x - y).sum(), count + x.size
    return largest, total / count


def section_translate(s, report):
    cpu = translated(s, "results_cpu", "cpu", "--amp", "off")
    largest, _ = grey_levels(translated(s, "results_fp32", s.device, "--amp", "off"), cpu)
    report.check(f"test.py on {s.device} in fp32 against the CPU", f"largest pixel difference "
                 f"{largest} of 255", "2", largest <= 2)
    largest, mean = grey_levels(translated(s, "results_bf16", s.device, "--amp", "on"), cpu)
    report.check(f"test.py on {s.device} in bf16 against the CPU in fp32",
                 f"mean pixel difference {mean:.2f}, largest {largest} of 255",
                 f"mean {BF16_MEAN_GREY:g}", mean <= BF16_MEAN_GREY)
    if s.device == "cuda":
        batch, _ = next(same_size_batches([(torch.zeros(3, 8, 8, dtype=torch.uint8), 0)], 1,
                                          pin=True))
        report.check("batches stacked for the GPU are page-locked",
                     f"is_pinned(): {batch.is_pinned()}", "True", batch.is_pinned())


def section_folder(s, report):
    """test.py over a folder at --batch_size 16, as a user runs it: loading, both generators,
    the PNG writers and start-up included."""
    folder = os.path.join(s.out, "folder")
    n = 512 if s.device == "cuda" else 32
    if not os.path.isdir(folder):
        os.makedirs(folder)
        rng = np.random.default_rng(1)
        for i in range(n):
            pixels = rng.integers(0, 256, (s.size, s.size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:04d}.png"))
    start = time.perf_counter()
    run(s, "folder_test", *python("test.py", "--input", folder, "--weights",
                                  trained(s, "straight"), "--results",
                                  os.path.join(s.out, "results_folder"), "--device", s.device,
                                  "--batch_size", 16))
    seconds = time.perf_counter() - start
    report.add("translation", f"| `test.py --input` a folder of {n} {s.size}x{s.size} images, "
               f"`--batch_size 16`, with reconstructions (start-up included) | {seconds:.1f} s, "
               f"{n / seconds:.1f} images/s |")


# Photos of any size

def timed(fn, device):
    """(result, seconds, peak GPU memory in GiB or None) of fn()."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return result, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30
    return result, time.perf_counter() - start, None


def photo_passes(G, image, autocast):
    """The whole and the tiled pass of `image` under `autocast`, each timed."""
    device, (h, w) = image.device, image.shape[-2:]
    # Room for nine tenths of the whole pass: the tiled pass runs, with the tile it chooses.
    budget = 0.9 * tiles.whole_pass_bytes(G, h, w) / tiles.WHOLE_PASS_SHARE
    with autocast:
        whole = timed(lambda: models.translate(G, image).float(), device)
        tiled = timed(lambda: tiles.translate_within(G, image, budget)[0].float(), device)
    return whole, tiled, tiles.choose_tile(G, budget, device)


def describe_pass(name, result):
    _, seconds, peak = result
    return f"{name}: {seconds:.2f} s" + (f", peak {peak:.1f} GiB" if peak is not None else "")


def section_tiles(s, report):
    device = torch.device(s.device)
    torch.manual_seed(0)
    G = models.Generator(**s.ngf_blocks).eval().to(device)
    width, height = s.photo
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    image = image.to(device) * 2 - 1
    models.translate(G, image[..., :256, :256])  # the device's first kernels, not timed
    passes = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
        passes[name] = photo_passes(G, image, autocast)
        whole, tiled, tile = passes[name]
        report.add("translation", f"| {width}x{height} photo ({width * height / 1e6:.1f} MP), "
                   f"{name} | {describe_pass('whole', whole)}; {describe_pass('tiled', tiled)} "
                   f"(tiles of {tile}) |")
    (whole, _, _), (tiled, _, _), _ = passes["fp32"]
    difference = (whole - tiled).abs().max().item()
    report.check(f"a {width}x{height} photo in fp32 tiles against whole", f"largest difference "
                 f"{difference:.1e} (on the [-1, 1] scale)", "1e-4", difference <= 1e-4)
    (half, _, _), (half_tiled, _, _), _ = passes["bf16"]
    tiling, bf16 = (half_tiled - half).abs().mean().item(), (half - whole).abs().mean().item()
    report.check("the same in bf16", f"mean difference {tiling:.1e}; bf16 against fp32 "
                 f"{bf16:.1e}", "1.5x bf16's", tiling <= 1.5 * bf16)
    del passes
    if device.type == "cuda":
        torch.cuda.empty_cache()  # for the processes of the sections after this one


def section_batches(s, report):
    """Eight frames with room for three whole: sub-batches of three, against tiling every
    frame, as test.py did before it split batches."""
    device = torch.device(s.device)
    torch.manual_seed(0)
    G = models.Generator(**s.ngf_blocks).eval().to(device)
    height, width = (1080, 1920) if s.device == "cuda" else (120, 160)
    frames = torch.rand(8, 3, height, width, generator=torch.Generator().manual_seed(0))
    frames = frames.to(device) * 2 - 1
    models.translate(G, frames[:1, :, :64, :64])  # the device's first kernels, not timed
    budget = 3.5 * tiles.whole_pass_bytes(G, height, width) / tiles.WHOLE_PASS_SHARE
    split = timed(lambda: tiles.translate_within(G, frames, budget)[0], device)
    tile = tiles.choose_tile(G, budget, device)
    tiled = timed(lambda: tiles.translate_tiled(G, frames, tile), device)
    report.add("translation", f"| 8 frames of {width}x{height}, fp32, room for 3 whole | "
               f"{describe_pass('in sub-batches of 3', split)}; "
               f"{describe_pass(f'all in tiles of {tile}', tiled)} |")
    one_by_one = torch.cat([models.translate(G, frame[None]) for frame in frames])
    difference = (split[0] - one_by_one).abs().max().item()
    report.check("8 frames in sub-batches against one at a time (fp32)", f"largest difference "
                 f"{difference:.1e}", "1e-4", difference <= 1e-4)


def random_inception(s):
    """pytorch-fid's InceptionV3 with random weights, saved once: the Inception weights may not
    be downloadable here, and a random network checks the plumbing (its FID means nothing)."""
    path = os.path.join(s.out, "random_inception.pth")
    if not os.path.exists(path):
        from pytorch_fid import inception as fid
        made, build, load = [], fid._inception_v3, fid.load_state_dict_from_url
        fid._inception_v3 = lambda *a, **k: made.append(build(*a, **k)) or made[-1]
        fid.load_state_dict_from_url = lambda *a, **k: made[-1].state_dict()
        try:
            torch.save(fid.fid_inception_v3().state_dict(), path)
        finally:
            fid._inception_v3, fid.load_state_dict_from_url = build, load
    return path


def section_evaluate(s, report):
    results = translated(s, "results_cpu", "cpu", "--amp", "off")
    metrics = {}
    for where in dict.fromkeys(("cpu", s.device)):
        path = os.path.join(s.out, f"metrics_{where}.json")
        run(s, f"evaluate_{where}", *python(
            "evaluate.py", "--dataroot", data(s), "--results", results, "--inception",
            random_inception(s), "--dims", "64", "--kid_subsets", "10", "--device", where,
            "--json", path))
        with open(path) as f:
            metrics[where] = json.load(f)
    cpu, here = metrics["cpu"], metrics[s.device]
    difference = max(abs(cpu[d]["fid"] - here[d]["fid"]) / max(abs(cpu[d]["fid"]), 1e-8)
                     for d in ("A2B", "B2A"))
    report.check(f"evaluate.py on {s.device} against the CPU, same images (random "
                 "InceptionV3, 64-d)", f"largest relative FID difference {difference:.1e}",
                 "1e-3", difference <= 1e-3)


# Speed

def benchmark(s, name, batch, *options):
    """benchmark.py's JSON for one configuration."""
    path = os.path.join(s.out, f"{name}.json")
    run(s, name, *python("benchmark.py", "--device", s.device, "--size", s.size, *s.arch,
                         "--iters", s.iters, "--warmup", 3, "--batch_size", batch, *options,
                         "--json", path))
    with open(path) as f:
        return json.load(f)


def speed_row(s, r, options):
    t = r["train_seconds_per_iteration"]
    peak = next((v for k, v in PEAKS.items() if k in r["device"]), None)
    share = f" ({r['train_tflops_achieved'] / peak:.0%})" if peak else ""
    command = " ".join(["python benchmark.py --size", str(s.size), *s.arch, "--batch_size",
                        str(r["options"]["batch_size"]), *options])
    return (f"| `{command}` | {r['options']['batch_size']} | {t['median']:.4f} ({t['min']:.4f}-"
            f"{t['max']:.4f}) | {r['train_iterations_per_second']:.2f} | "
            f"{r['train_tflops_achieved']:.2f}{share} | {r['peak_memory_mib']:.0f} MiB | "
            f"{r['translate_images_per_second']:.1f} |")


def section_speed(s, report):
    configurations = [("--amp", "off", "--compile", "off"), ("--amp", "on", "--compile", "off"),
                      ("--amp", "on", "--channels_last", "--compile", "off")]
    for batch in s.batches:
        # A cold compile takes a minute or more: at batch 1 only, to fit in ten minutes. CUDA
        # graphs are meant for batch 1, where launches, not arithmetic, may bound a step.
        compiled = ([("--amp", "on", "--compile", "on"), ("--amp", "on", "--compile", "graphs")]
                    if batch == 1 else [])
        for options in configurations + compiled:
            name = f"bench_{batch}_" + "".join(o.strip("-") for o in options)
            report.add("speed", speed_row(s, benchmark(s, name, batch, *options), options))
        log = run(s, f"authors_{batch}", *python(
            "tests/authors.py", "--device", s.device, "--size", s.size, "--batch_size", batch,
            "--iters", s.iters, "--warmup", 3))
        with open(log) as f:
            found = re.search(r"([\d.]+) s/iteration median \(min ([\d.]+), max ([\d.]+)", f.read())
        report.add("speed", f"| `python tests/authors.py --size {s.size} --batch_size {batch}` "
                   f"(the authors' step, fp32) | {batch} | {found[1]} ({found[2]}-{found[3]}) "
                   "| | | | |")
    r = benchmark(s, "translate_16", 16, "--amp", "on", "--compile", "off")
    report.add("translation", f"| translation at batch 16 (bf16, `benchmark.py --size {s.size} "
               f"--batch_size 16 --amp on`) | {r['translate_images_per_second']:.1f} images/s |")


def make_clip(s):
    """A smooth moving picture of s.frames frames, s.size square, made once."""
    import av
    path = os.path.join(s.out, "clip.mp4")
    if os.path.exists(path):
        return path
    y, x = np.mgrid[0:s.size, 0:s.size]
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = s.size, s.size, "yuv420p"
        for i in range(s.frames):
            pixels = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256,
                               np.full_like(x, 8 * i % 256)], -1).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def section_video(s, report):
    for batch in (1, 8):
        r = benchmark(s, f"video_{batch}", batch, "--iters", 1, "--amp", "on", "--compile", "off",
                      "--video", make_clip(s))
        v = r["video_frames_per_second"]
        report.add("translation", f"| a {s.frames}-frame {s.size}x{s.size} video at batch {batch} "
                   f"(bf16, test.py's pipeline), frames/s, median (min-max) of 3 runs | "
                   f"{v['median']:.1f} ({v['min']:.1f}-{v['max']:.1f}) |")


# The sections, one after the other

def run_section(name, s, report):
    """Run one section; returns 'passed', 'a check failed' or 'FAIL: ...'."""
    before = report.failures
    try:
        globals()[f"section_{name}"](s, report)
    except Exception as e:  # a section that breaks must not stop the others
        with open(os.path.join(s.out, f"{name}.log"), "a") as f:
            traceback.print_exc(file=f)
        message = str(e) if isinstance(e, CheckError) else f"{type(e).__name__}: {e}"
        message = message.strip().splitlines()[-1] if message.strip() else type(e).__name__
        report.check(f"section {name}", f"FAIL: {message}", "", "FAIL")
        return f"FAIL: {message}"
    return "passed" if report.failures == before else "a check failed"


def parse_args(argv):
    """The options; a mistake, or a machine without a GPU and no --smoke, is one line."""
    p = ArgumentParser(prog="gpu_check.sh", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("out", metavar="OUT", help="folder for gpu_check.md, logs and JSON")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--only", help="comma-separated sections to run (default: all)")
    args = p.parse_args(argv)
    args.sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        p.error(f"--only {args.only}: no section {', '.join(unknown)}; the sections are "
                f"{', '.join(SECTIONS)}")
    if not args.smoke and not torch.cuda.is_available():
        p.error("no CUDA GPU here (torch.cuda.is_available() is False); on a CPU, --smoke "
                "runs every section at tiny sizes")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        p.error(f"{args.out}: cannot make this folder ({e.strerror or e})")
    return args


def main(argv=None):
    args = parse_args(argv)
    s = make_setup(args.smoke, os.path.abspath(args.out))
    set_fp32_precision("ieee")  # the comparisons here are of true fp32
    report = Report(os.path.join(s.out, "gpu_check.md"), "GPU check (" + (
        "smoke run on the CPU" if s.smoke else f"{s.size} x {s.size}") + ")")
    failed = []
    for name in args.sections:
        start = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        result = run_section(name, s, report)
        report.add("sections", f"| {name} | {time.perf_counter() - start:.0f} | {result} |")
        report.write()
        if result != "passed":
            failed.append(name)
    with open(report.path) as f:
        print(f.read())
    if failed:
        sys.exit(f"gpu_check.sh: error: failed sections: {', '.join(failed)} (NO or FAIL in "
                 f"{report.path}; logs in {s.out})")
    print(f"gpu_check.sh: report in {report.path}")


if __name__ == "__main__":
    main()
