"""Time an exported ONNX generator in ONNX Runtime against test.py's PyTorch pass on this CPU.

    python scripts/export_benchmark.py exported/netG_A2B.onnx \
        --weights output/horse2zebra/netG_A2B.pth --size 256x256 --runs 5 --engine onnxruntime

Prints the median seconds per image (and the range) on random images of the given width x
height: ONNX Runtime on the whole image, or PyTorch as test.py translates (fp32, whole or in
tiles within the memory budget, as tiles.translate_within chooses). One engine per process:
ONNX Runtime keeps the memory it planned for a large image, which would leave PyTorch less,
and each process's peak memory (`/usr/bin/time -v`) is then its own.
"""
import argparse
import os
import statistics
import sys
import time

import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tiles import translate_within  # noqa: E402
from weights import build_generator, generator_states  # noqa: E402


def timed(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return f"{statistics.median(times):.3f} s ({min(times):.3f}-{max(times):.3f}, n {runs})"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx")
    p.add_argument("--weights", required=True, help="the generator .pth the file was made from")
    p.add_argument("--size", default="256x256", help="width x height")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--engine", choices=("onnxruntime", "pytorch"), required=True)
    args = p.parse_args()
    width, height = map(int, args.size.split("x"))
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    print(f"{width}x{height}, {torch.get_num_threads()} threads")
    if args.engine == "onnxruntime":
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
        session.run(None, {"image": image.numpy()})  # warm-up, as the first call plans memory
        print("onnxruntime:", timed(lambda: session.run(None, {"image": image.numpy()}),
                                    args.runs))
        return
    G = build_generator(*generator_states(args.weights, ["A2B"])["A2B"], None, None, "cpu")
    with torch.inference_mode():
        print("pytorch (test.py's pass, fp32):",
              timed(lambda: translate_within(G, image), args.runs))


if __name__ == "__main__":
    main()
