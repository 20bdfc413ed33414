"""How many PNGs a second 1, 2 and 4 threads write, as test.py writes them (Pillow, its default
compression), of photo-like pictures (smooth gradients with noise): whether encoding releases
the GIL, so that test.py's writer threads add up.

    python scripts/png_writers.py --size 256 --images 64

Prints, per number of threads, images/s as the median (min-max) of --repeat runs.
"""
import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image


def pictures(size, n=4):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    smooth = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1)
    return [np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
            for _ in range(n)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="side in pixels (default: 256)")
    p.add_argument("--images", type=int, default=64, help="PNGs per run (default: 64)")
    p.add_argument("--repeat", type=int, default=3, help="runs per thread count (default: 3)")
    args = p.parse_args()
    images = pictures(args.size)
    with tempfile.TemporaryDirectory() as out:
        def write(i):
            Image.fromarray(images[i % len(images)]).save(os.path.join(out, f"{i}.png"))

        for threads in (1, 2, 4):
            rates = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(write, range(args.images)))
                rates.append(args.images / (time.perf_counter() - start))
            print(f"{args.size}x{args.size}, {threads} thread(s): {statistics.median(rates):.1f} "
                  f"images/s ({min(rates):.1f}-{max(rates):.1f})")


if __name__ == "__main__":
    main()
