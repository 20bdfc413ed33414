"""Time CycleGAN training iterations and translations on this machine, on synthetic images.

    python benchmark.py --size 256 --batch_size 1 [--amp on|off] [--channels_last] [--compile off]

Reports the median and spread of seconds per training iteration and images per second of
translation after warm-up, the peak memory (GPU memory on CUDA, resident memory on CPU), and
the achieved TFLOP/s from FLOPs counted by torch for one iteration; when compiled (as train.py
compiles a long run under --compile auto), the compile time; with --dataroot, how long one
worker takes to decode and augment a training pair; with --video, the frames per second of
translating that video as test.py does. Prints a table and writes JSON (--json).
"""
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cyclegan import CycleGAN
from datasets import (EpochSampler, UnalignedDataset, domain_dir, from_pixels, list_images,
                      to_pixels)
from models import crop_problem, translate
from utils import (COMPILE_MIN_ITERATIONS, ArgumentParser, UserError, add_amp_argument,
                   add_compile_argument, add_device_argument, default_load_size,
                   eager_where_compiling_fails, fail, pick_device, require, set_fp32_precision,
                   synchronize, use_amp, use_compile)
from video import VideoError, VideoReader, check_video, translate_frames


def build_parser():
    p = ArgumentParser(description="Time training iterations and translations on synthetic "
                       "images.")
    p.add_argument("--size", type=int, default=256,
                   help="image height and width, a multiple of 4 (default: 256)")
    p.add_argument("--batch_size", type=int, default=1,
                   help="images per domain per iteration (default: 1)")
    add_amp_argument(p)
    p.add_argument("--channels_last", action="store_true",
                   help="channels-last memory format, as train.py")
    add_compile_argument(p)
    p.add_argument("--dataroot",
                   help="also time decoding and augmenting training pairs from this dataset")
    p.add_argument("--video", help="also time translating this video with G_A2B as test.py does "
                   "(decoding, --batch_size frames at a time, encoding the input and the "
                   "translation), --video_runs times")
    p.add_argument("--video_runs", type=int, default=3,
                   help="times to translate --video (default: 3)")
    p.add_argument("--ngf", type=int, default=64, help="generator filters (default: 64)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator filters (default: 64)")
    p.add_argument("--n_blocks", type=int, default=9,
                   help="residual blocks per generator (default: 9)")
    add_device_argument(p)
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default: 2)")
    p.add_argument("--iters", type=int, default=10,
                   help="timed training iterations (default: 10)")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def check_args(args):
    """The checks shared with tests/authors.py."""
    problem = crop_problem(args.size)
    if problem:
        raise UserError(f"--size {args.size}: {problem}")
    require(args, 1, "batch_size", "iters")
    require(args, 0, "warmup")


def check_inputs(args):
    """Everything the user gave, before minutes of training benchmarks."""
    check_args(args)
    require(args, 1, "ngf", "ndf", "n_blocks", "video_runs")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise UserError(f"--json {args.json}: no such folder")
    if args.video and (reason := check_video(args.video)):
        raise UserError(f"--video {args.video}: {reason}")


def timed(fn, device, warmup, iters):
    """Seconds per call of fn, `iters` times after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def summary(times):
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "n": len(times)}


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "Apple GPU (MPS)" if device.type == "mps" else platform.processor() or "cpu"


def count_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_memory_mib(device):
    """The peak of GPU memory on CUDA; on MPS, which keeps no peak, what Metal holds at the
    end; resident memory on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(args):
    check_inputs(args)
    device = pick_device(args.device)
    set_fp32_precision("tf32")  # as train.py
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py: one input size throughout
    model = CycleGAN(device=device, ngf=args.ngf, ndf=args.ndf, n_blocks=args.n_blocks,
                     amp=use_amp(args.amp, device), channels_last=args.channels_last)
    g = torch.Generator().manual_seed(0)
    real_A, real_B = (torch.rand(args.batch_size, 3, args.size, args.size, generator=g) * 2 - 1
                      for _ in "AB")
    if device.type == "cuda":  # as train.py's loader: pinned, so copies to the GPU do not block
        real_A, real_B = real_A.pin_memory(), real_B.pin_memory()

    def train_step():
        model.step(real_A, real_B)

    def translate_batch():
        with torch.inference_mode(), model.autocast():
            translate(model.G_A2B, real_A.to(device, memory_format=model.memory_format))

    flops = {"train": count_flops(train_step), "generator": count_flops(translate_batch)}
    mode, note, compile_seconds = compile_as_train_py(model, args, device,
                                                      (train_step, translate_batch))
    train = summary(timed(train_step, device, args.warmup, args.iters))
    trans = summary(timed(translate_batch, device, args.warmup, args.iters))
    return {
        "device": device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "options": {k: v for k, v in vars(args).items() if k != "json"},
        "amp": str(model.amp_dtype).removeprefix("torch.") if model.amp_dtype else "off",
        "train_seconds_per_iteration": train,
        "train_iterations_per_second": 1 / train["median"],
        "train_tflop_per_iteration": flops["train"] / 1e12,
        "train_tflops_achieved": flops["train"] / train["median"] / 1e12,
        "translate_images_per_second": args.batch_size / trans["median"],
        "translate_seconds_per_batch": trans,
        "generator_gflop_per_image": flops["generator"] / args.batch_size / 1e9,
        "peak_memory_mib": peak_memory_mib(device),
        "compile_seconds": compile_seconds, "compile_mode": mode, "compile_note": note,
        "data_seconds_per_pair": time_data(args.dataroot, args.size) if args.dataroot else None,
        "video_frames_per_second": time_video(args.video, model, args) if args.video else None,
    }


def compile_as_train_py(model, args, device, fns):
    """Compile as train.py decides for a run long enough to repay compiling, and time the
    first call of each of `fns`, which compiles; returns (mode, note, seconds or None)."""
    mode, note = use_compile(args.compile, device, COMPILE_MIN_ITERATIONS)
    if not mode:
        return mode, note, None
    eager_where_compiling_fails()
    model.compile(mode)
    return mode, note, sum(timed(fn, device, 0, 1)[0] for fn in fns)


def time_data(dataroot, size, n=100):
    """Seconds one worker takes to read, decode, resize, crop and flip an (A, B) training pair,
    over the first `n` pairs of the first epoch."""
    paths_A, paths_B = (list_images(domain_dir(dataroot, "train", d))[0] for d in "AB")
    dataset = UnalignedDataset(paths_A, paths_B, default_load_size(size), size)
    keys = list(EpochSampler(len(paths_A), len(paths_B), seed=0))[:n]
    return summary(timed(lambda: dataset[keys.pop()], torch.device("cpu"), 0, len(keys)))


def time_video(path, model, args):
    """Frames per second of translating the video at `path` with G_A2B, start to end of each
    of --video_runs runs (the outputs go to a temporary folder); and its frame count and size."""
    def generate(frames):
        with torch.inference_mode(), model.autocast():
            frames = frames.to(model.device, memory_format=model.memory_format)
            return to_pixels(translate(model.G_A2B, from_pixels(frames))).cpu()

    rates = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.video_runs):
            try:
                with VideoReader(path) as video:
                    start = time.perf_counter()
                    translate_frames(video, generate, os.path.join(out, "real.mp4"),
                                     os.path.join(out, "fake.mp4"), args.batch_size,
                                     pin=model.device.type == "cuda")
                    rates.append(video.count / (time.perf_counter() - start))
            except VideoError as e:
                raise UserError(f"--video {path}: {e}")
    return {**summary(rates), "frames": video.count, "width": video.width, "height": video.height}


def print_table(r):
    t, s = r["train_seconds_per_iteration"], r["translate_seconds_per_batch"]
    o = r["options"]
    print(f"device {r['device']} ({r['threads']} threads), torch {r['torch']}, size {o['size']}, "
          f"batch {o['batch_size']}, amp {r['amp']}, channels_last {o['channels_last']}, "
          f"compile {o['compile']} ({r['compile_mode'] or 'eager'})")
    print(f"{'measure':<34}{'median':>10}{'min':>10}{'max':>10}")
    print(f"{'train s/iteration':<34}{t['median']:>10.4f}{t['min']:>10.4f}{t['max']:>10.4f}")
    print(f"{'translate s/batch':<34}{s['median']:>10.4f}{s['min']:>10.4f}{s['max']:>10.4f}")
    print(f"train iterations/s {r['train_iterations_per_second']:.3f}; translate images/s "
          f"{r['translate_images_per_second']:.2f}")
    print(f"FLOP: {r['train_tflop_per_iteration'] * 1000:.4g} GFLOP per iteration, "
          f"{r['generator_gflop_per_image']:.4g} GFLOP per generator forward per image; "
          f"achieved {r['train_tflops_achieved']:.3g} TFLOP/s in training")
    print(f"peak memory {r['peak_memory_mib']:.0f} MiB")
    if r["compile_seconds"] is not None:
        print(f"compiling took {r['compile_seconds']:.1f} s (the first training iteration and "
              "translation)")
    if r["data_seconds_per_pair"]:
        d = r["data_seconds_per_pair"]
        print(f"data: {d['median'] * 1000:.1f} ms (min {d['min'] * 1000:.1f}, max "
              f"{d['max'] * 1000:.1f}) per training pair per worker, {1 / d['median']:.0f} pairs/s "
              "per worker")
    if r["video_frames_per_second"]:
        v = r["video_frames_per_second"]
        print(f"video ({v['frames']} frames, {v['width']}x{v['height']}): {v['median']:.2f} "
              f"frames/s (min {v['min']:.2f}, max {v['max']:.2f}) over {v['n']} runs")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except UserError as e:
        fail(f"benchmark.py: error: {e}")
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
