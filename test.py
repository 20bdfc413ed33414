"""Translate images with trained CycleGAN generators, at their native size.

    python test.py --dataroot datasets/horse2zebra            # testA -> B and testB -> A
    python test.py --input my_photos --weights horse2zebra.pth --direction A2B

Writes RESULTS/A2B/<name>.png and RESULTS/B2A/<name>.png (the translations), RESULTS/real_A/
and RESULTS/real_B/ (the inputs as the network saw them) and RESULTS/index.html.
"""
import collections
import html
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from torchvision.utils import save_image
from tqdm import tqdm

from datasets import ImageFiles, domain_dir, list_images
from models import Generator, translate
from utils import (ArgumentParser, UserError, add_amp_argument, amp_dtype, default_workers, fail, load_weights, pick_device,
                   precision_name, report_skipped, require, use_amp)

DIRECTIONS = {"A2B": ("A", "G_A2B"), "B2A": ("B", "G_B2A")}


def build_parser():
    p = ArgumentParser(description="Translate test images A->B and B->A with trained generators.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataroot", help="dataset folder: translates testA/ (or test/A) and testB/ (or test/B)")
    source.add_argument("--input", help="a folder of your own images to translate in --direction")
    p.add_argument("--direction", choices=("A2B", "B2A", "both"),
                   help="which generator(s) to run (default: both with --dataroot, A2B with --input)")
    p.add_argument("--weights", help="folder with netG_A2B.pth and netG_B2A.pth (train.py's --output), train.py's "
                   "checkpoint.pth, or one generator .pth file such as the authors' horse2zebra.pth "
                   "(default: output/<dataroot name>)")
    p.add_argument("--results", help="where translations and index.html go (default: <weights folder>/results, "
                   "or <weights folder>/results_<input folder name> with --input)")
    p.add_argument("--ngf", type=int, help="generator filters in the first layer (default: read from the weights)")
    p.add_argument("--n_blocks", type=int, help="residual blocks per generator (default: read from the weights)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch_size", type=int, default=1,
                   help="images of one size translated together; more is faster on a GPU (default: 1)")
    add_amp_argument(p)
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="image-loading worker processes; 0 loads in the main process (default: 4, or the CPU count if lower)")
    return p


def resolve(args):
    """Check the options, fill in the defaults that depend on others; returns {direction: input folder}."""
    require(args, 0, "workers")
    require(args, 1, "ngf", "n_blocks", "batch_size")
    if args.dataroot is not None:
        directions = ("A2B", "B2A") if args.direction in (None, "both") else (args.direction,)
        inputs = {d: domain_dir(args.dataroot, "test", DIRECTIONS[d][0]) for d in directions}
        args.weights = args.weights or os.path.join("output", os.path.basename(os.path.normpath(args.dataroot)))
    else:
        if args.direction == "both":
            raise UserError("--direction both needs --dataroot; with --input choose A2B or B2A")
        if args.weights is None:
            raise UserError("--input needs --weights (a training output folder or a generator .pth file)")
        if not os.path.isdir(args.input):
            raise UserError(f"--input {args.input}: no such folder")
        inputs = {args.direction or "A2B": args.input}
    if args.results is None:
        base = args.weights if os.path.isdir(args.weights) else os.path.dirname(os.path.abspath(args.weights))
        name = "results" if args.input is None else "results_" + os.path.basename(os.path.normpath(args.input))
        args.results = os.path.join(base, name)
    for folder in inputs.values():
        if _inside(args.results, folder):
            raise UserError(f"--results {args.results}: is inside the input folder {folder}; choose another")
    try:
        os.makedirs(args.results, exist_ok=True)
    except OSError as e:
        raise UserError(f"--results {args.results}: cannot write there ({e.strerror or e})")
    return inputs


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def generator_states(weights, directions):
    """{direction: (file, state_dict)} from a training output folder, a bare generator file
    (ours or the authors'), or train.py's checkpoint.pth (which holds both generators)."""
    if os.path.isdir(weights):
        files = {d: os.path.join(weights, f"net{DIRECTIONS[d][1]}.pth") for d in directions}
        for path in files.values():
            if not os.path.isfile(path):
                raise UserError(f"{path}: not found; --weights must be a folder written by train.py")
        return {d: (path, _read(path)) for d, path in files.items()}
    if not os.path.isfile(weights):
        raise UserError(f"--weights {weights}: no such file or folder")
    state = _read(weights)
    if isinstance(state, dict) and "model" in state:
        return {d: (weights, state["model"][DIRECTIONS[d][1]]) for d in directions}
    if len(directions) > 1:
        raise UserError(f"{weights}: holds one generator; add --direction A2B or B2A")
    return {directions[0]: (weights, state)}


def _read(path):
    try:
        return load_weights(path)
    except Exception as e:
        raise UserError(f"{path}: not a weights file torch can read safely ({type(e).__name__})")


def build_generator(path, state, ngf, n_blocks, device):
    """A Generator holding `state`; --ngf and --n_blocks default to what the file holds."""
    found = architecture(state)
    if found is None:
        raise UserError(f"{path}: holds no CycleGAN generator (no model.1.weight)")
    ngf = found[0] if ngf is None else ngf
    n_blocks = found[1] if n_blocks is None else n_blocks
    G = Generator(ngf=ngf, n_blocks=n_blocks)
    problem = _first_mismatch(G.state_dict(), state)
    if problem:
        raise UserError(f"{path}: does not fit --ngf {ngf} --n_blocks {n_blocks}; it holds a generator for "
                        f"--ngf {found[0]} --n_blocks {found[1]} ({problem})")
    G.load_state_dict(state, strict=True)
    return G.to(device).eval()


def architecture(state):
    """(ngf, n_blocks) of a generator state_dict in the authors' layout, or None."""
    try:
        return state["model.1.weight"].shape[0], sum(k.endswith("conv_block.1.weight") for k in state)
    except (KeyError, TypeError, AttributeError, IndexError):
        return None


def _first_mismatch(expected, state):
    for key, tensor in expected.items():
        if key not in state:
            return f"{key} is missing"
        shape = tuple(getattr(state[key], "shape", ()))
        if shape != tuple(tensor.shape):
            return f"{key} has shape {shape}, expected {tuple(tensor.shape)}"
    unexpected = [key for key in state if key not in expected]
    return f"unexpected key {unexpected[0]}" if unexpected else None


def output_names(paths):
    """<stem>.png per input; files that share a stem (x.jpg, x.png) keep their extension."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = collections.Counter(stems)
    return [stem if counts[stem] == 1 else os.path.basename(p).replace(".", "_")
            for stem, p in zip(stems, paths)]


def run_direction(G, paths, results, direction, device, args):
    """Translate `paths` with G, up to --batch_size images of one size at a time, while worker
    processes read the next images and a thread writes the PNGs; returns the names written."""
    domain = DIRECTIONS[direction][0]
    names = output_names(paths)
    os.makedirs(os.path.join(results, direction), exist_ok=True)
    os.makedirs(os.path.join(results, f"real_{domain}"), exist_ok=True)
    loader = torch.utils.data.DataLoader(ImageFiles(paths), batch_size=None, num_workers=args.workers,
                                         pin_memory=device.type == "cuda")
    done, writes = [], []
    autocast = torch.autocast(device.type, dtype=amp_dtype(device), enabled=use_amp(args.amp, device))
    with ThreadPoolExecutor(max_workers=1) as writer, tqdm(desc=direction, total=len(paths)) as bar:
        for images, indices in same_size_batches(loader, args.batch_size):
            with autocast:
                fakes = translate(G, images.to(device, non_blocking=True)).float().cpu()
            for image, fake, i in zip(images, fakes, indices):
                writes.append(writer.submit(save_pair, image, fake, results, direction, names[i]))
                done.append(names[i])
            bar.update(len(indices))
        for write in writes:
            write.result()  # a failed write (a full disk) raises here
    return done


def same_size_batches(loader, batch_size):
    """Stack consecutive images of one size into batches of up to batch_size."""
    images, indices = [], []
    for image, i in loader:
        if image is None:  # unreadable, already reported
            continue
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield torch.stack(images), indices
            images, indices = [], []
        images.append(image)
        indices.append(i)
    if images:
        yield torch.stack(images), indices


def save_pair(image, fake, results, direction, name):
    save_image(image * 0.5 + 0.5, os.path.join(results, f"real_{DIRECTIONS[direction][0]}", f"{name}.png"))
    save_image(fake * 0.5 + 0.5, os.path.join(results, direction, f"{name}.png"))


def write_index(results, done):
    """index.html: each input beside its translation, with relative links."""
    parts = ["<!doctype html><meta charset='utf-8'><title>CycleGAN results</title>",
             "<style>body{font-family:sans-serif} td{padding:4px;vertical-align:top} "
             "img{max-width:320px}</style>"]
    for direction, names in done.items():
        domain = DIRECTIONS[direction][0]
        parts.append(f"<h2>{direction}</h2><table><tr><th>name</th><th>input</th><th>{direction}</th></tr>")
        for name in names:
            file = html.escape(f"{name}.png", quote=True)
            parts.append(f"<tr><td>{html.escape(name)}</td>"
                         f"<td><img loading='lazy' src='real_{domain}/{file}'></td>"
                         f"<td><img loading='lazy' src='{direction}/{file}'></td></tr>")
        parts.append("</table>")
    with open(os.path.join(results, "index.html"), "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        inputs = resolve(args)
        device = pick_device(args.device)
        scans = {d: list_images(folder) for d, folder in inputs.items()}
        states = generator_states(args.weights, list(inputs))
        generators = {d: build_generator(*states[d], args.ngf, args.n_blocks, device) for d in inputs}
    except UserError as e:
        fail(f"test.py: error: {e}")
    report_skipped([entry for _, skipped in scans.values() for entry in skipped])
    print(f"device {device} ({precision_name(amp_dtype(device) if use_amp(args.amp, device) else None)})")
    try:
        done = {d: run_direction(generators[d], scans[d][0], args.results, d, device, args) for d in inputs}
    except KeyboardInterrupt:
        fail(f"test.py: interrupted; the images translated so far are in {args.results}", 130)
    except OSError as e:  # a full disk while writing results
        fail(f"test.py: error: {e.strerror or e}: {e.filename or ''}", 1)
    write_index(args.results, done)
    print(f"results in {args.results} ({os.path.join(args.results, 'index.html')})")


if __name__ == "__main__":
    main(sys.argv[1:])
