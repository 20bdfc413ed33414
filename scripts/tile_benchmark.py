"""Peak memory and time of translating one large image, whole-image pass against tiled.

Each case runs in a fresh Python process, so that its peak RSS (the child's ru_maxrss, torch
itself included) is its own. The generator has the real size (ngf 64, 9 residual blocks) with
random weights, and the image is random: time and memory do not depend on either.

    OMP_NUM_THREADS=1 python3 scripts/tile_benchmark.py 1000x1000:whole 1000x1000:tiled
    OMP_NUM_THREADS=1 python3 scripts/tile_benchmark.py 4032x3024:tiled --budget_gb 4

A case is WIDTHxHEIGHT:MODE, MODE one of `whole` (models.translate), `tiled`
(tiles.translate_tiled at --tile, or at the tile tiles.translate_within would choose for
--budget_gb) or `auto` (tiles.translate_within with --budget_gb, else its own budget).
Cases run one after the other; each prints one line of JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="+", help="WIDTHxHEIGHT:MODE, MODE = whole, tiled or auto")
    p.add_argument("--tile", type=int,
                   help="tiled: tile side in pixels (default: chosen for --budget_gb)")
    p.add_argument("--budget_gb", type=float,
                   help="memory budget in GB (default: tiles.memory_budget)")
    p.add_argument("--storage", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--spill", action="store_true", help="tiled: activations in temporary files")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--n_blocks", type=int, default=9)
    p.add_argument("--repeat", type=int, default=1, help="fresh processes per case")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args):
    """Translate the one case in this process; print seconds and what ran as JSON."""
    sys.path.insert(0, ROOT)
    import torch

    import models
    import tiles
    (size, mode), = (case.split(":") for case in args.cases)
    width, height = map(int, size.split("x"))
    torch.manual_seed(0)
    G = models.Generator(ngf=args.ngf, n_blocks=args.n_blocks).eval()
    image = torch.rand(1, 3, height, width) * 2 - 1
    budget = None if args.budget_gb is None else int(args.budget_gb * 1e9)
    tile = args.tile or tiles.choose_tile(G, budget or tiles.memory_budget("cpu"))
    start = time.perf_counter()
    if mode == "whole":
        models.translate(G, image)
        tiled = False
    elif mode == "tiled":
        tiles.translate_tiled(G, image, tile, getattr(torch, args.storage), spill=args.spill)
        tiled = True
    else:
        _, tiled = tiles.translate_within(G, image, budget)
    seconds = time.perf_counter() - start
    tile = tile if mode == "tiled" else None
    print(json.dumps({"seconds": round(seconds, 1), "tiled": tiled,
                      "threads": torch.get_num_threads(), "tile": tile}))


def run_case(case, argv):
    """One case in a fresh process: its JSON line plus its peak RSS in GB."""
    command = [sys.executable, os.path.abspath(__file__), "--child", case, *argv]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{case} failed")
    result = json.loads(out.strip().splitlines()[-1])
    # ru_maxrss is in kilobytes on Linux. CPU seconds (the whole process, start-up included)
    # are less disturbed than wall seconds by other processes on a shared machine.
    return {"case": case, **result, "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        return child(args)
    options = [a for a in argv if a not in args.cases]
    for case in args.cases:
        for _ in range(args.repeat):
            print(json.dumps(run_case(case, options)), flush=True)


if __name__ == "__main__":
    main()
