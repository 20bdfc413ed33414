"""Translate images and videos with trained CycleGAN generators, at their native size.

    python test.py --dataroot datasets/horse2zebra            # testA -> B and testB -> A
    python test.py --input my_photos --weights horse2zebra.pth --direction A2B
    python test.py --input clip.mp4 --weights output/horse2zebra --direction A2B

Writes RESULTS/A2B/<name>.png and RESULTS/B2A/<name>.png (the translations), RESULTS/real_A/
and RESULTS/real_B/ (the inputs as the network saw them) and RESULTS/index.html; a video
becomes <name>.mp4 in the same folders.
"""
import collections
import contextlib
import copy
import functools
import html
import os
import signal
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import torch
from torchvision.utils import save_image
from tqdm import tqdm

from datasets import IMG_EXTENSIONS, ImageFiles, check_image, domain_dir, list_images
from models import Generator, translate
from utils import (DIRECTIONS, ArgumentParser, RunFailure, UserError, add_amp_argument, add_device_argument,
                   add_workers_argument, amp_dtype, default_output, download, fail, load_weights, pick_device,
                   precision_name, report_skipped, require, same_size_batches, use_amp)
from video import VIDEO_EXTENSIONS, VideoError, VideoReader, check_video, is_video, translate_frames

# The authors' published generators, each translating one way, and the one for the way back.
PRETRAINED = {
    "horse2zebra": "zebra2horse", "zebra2horse": "horse2zebra",
    "summer2winter_yosemite": "winter2summer_yosemite", "winter2summer_yosemite": "summer2winter_yosemite",
    "apple2orange": "orange2apple", "orange2apple": "apple2orange",
    "style_monet": "monet2photo", "monet2photo": "style_monet",
    "style_cezanne": None, "style_ukiyoe": None, "style_vangogh": None,
    "sat2map": "map2sat", "map2sat": "sat2map",
    "facades_photo2label": "facades_label2photo", "facades_label2photo": "facades_photo2label",
    "iphone2dslr_flower": None,
    "cityscapes_photo2label": "cityscapes_label2photo", "cityscapes_label2photo": "cityscapes_photo2label",
}
MODELS_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models"
PRETRAINED_CACHE = os.path.join("output", "pretrained")


def build_parser():
    p = ArgumentParser(description="Translate images and videos A->B and B->A with trained generators.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataroot", help="dataset folder: translates testA/ (or test/A) and testB/ (or test/B)")
    source.add_argument("--input", help="your own images and videos to translate in --direction: a folder of "
                        "them, or one file")
    p.add_argument("--direction", choices=("A2B", "B2A", "both"),
                   help="which generator(s) to run (default: both with --dataroot, A2B with --input)")
    p.add_argument("--weights", help="folder with netG_A2B.pth and netG_B2A.pth (train.py's --output), train.py's "
                   "checkpoint.pth, or one generator .pth file such as the authors' horse2zebra.pth "
                   "(default: output/<dataroot name>)")
    p.add_argument("--pretrained", metavar="NAME", choices=sorted(PRETRAINED),
                   help="use the authors' published generator NAME (downloaded once into output/pretrained/, "
                   f"from $CYCLEGAN_MODELS_URL or {MODELS_URL}) on --input, in the one direction it translates: "
                   + ", ".join(PRETRAINED))
    p.add_argument("--results", help="where translations and index.html go (default: <weights folder>/results, "
                   "or <weights folder>/results_<input folder name> with --input)")
    p.add_argument("--ngf", type=int, help="generator filters in the first layer (default: read from the weights)")
    p.add_argument("--n_blocks", type=int, help="residual blocks per generator (default: read from the weights)")
    add_device_argument(p)
    p.add_argument("--batch_size", type=int, default=1,
                   help="images of one size, or frames of a video, translated together; more is faster on a GPU "
                   "(default: 1)")
    p.add_argument("--side_by_side", action="store_true",
                   help="videos: each frame of the translated video shows the input on the left and its "
                   "translation on the right, as demonstrations show them")
    add_amp_argument(p, training=False)
    add_workers_argument(p, "image-loading")
    return p


def resolve(args):
    """Check the options, fill in the defaults that depend on others; returns {direction: input folder}."""
    require(args, 0, "workers")
    require(args, 1, "ngf", "n_blocks", "batch_size")
    if args.pretrained:
        check_pretrained(args)
    if args.dataroot is not None:
        directions = ("A2B", "B2A") if args.direction in (None, "both") else (args.direction,)
        inputs = {d: domain_dir(args.dataroot, "test", DIRECTIONS[d].source) for d in directions}
        args.weights = args.weights or default_output(args.dataroot)
    else:
        if args.direction == "both":
            raise UserError("--direction both needs --dataroot; with --input choose A2B or B2A")
        if args.weights is None and not args.pretrained:
            raise UserError("--input needs --weights (a training output folder or a generator .pth file)")
        if not os.path.exists(args.input):
            raise UserError(f"--input {args.input}: no such file or folder")
        if args.pretrained:
            args.weights = fetch_pretrained(args.pretrained)
        inputs = {args.direction or "A2B": args.input}
    if args.results is None:
        base = args.weights if os.path.isdir(args.weights) else os.path.dirname(os.path.abspath(args.weights))
        name = "_".join(filter(None, ["results", args.pretrained, args.input and _input_name(args.input)]))
        args.results = os.path.join(base, name)
    for folder in filter(os.path.isdir, inputs.values()):
        if _inside(args.results, folder):
            raise UserError(f"--results {args.results}: is inside the input folder {folder}; choose another")
    return inputs


def make_results_folder(results):
    """Made once the inputs and weights are known to be good: a mistake leaves no empty folder."""
    try:
        os.makedirs(results, exist_ok=True)
    except OSError as e:
        raise UserError(f"--results {results}: cannot write there ({e.strerror or e})")


def check_pretrained(args):
    """--pretrained goes with --input, without --weights, in its one direction."""
    name, back = args.pretrained, PRETRAINED[args.pretrained]
    if args.dataroot is not None or args.weights is not None:
        raise UserError(f"--pretrained {name} translates a folder you give with --input (for a dataset: "
                        f"--input datasets/NAME/testA), and takes no --dataroot or --weights")
    if args.direction not in (None, "A2B"):
        other = f"use --pretrained {back}" if back else "no model for the other way was published"
        raise UserError(f"--pretrained {name} translates one way only (A2B, as its name says); for the other way, "
                        f"{other}")


def fetch_pretrained(name):
    """The cached file of an authors' generator, downloaded the first time."""
    path = os.path.join(PRETRAINED_CACHE, f"{name}.pth")
    if os.path.isfile(path):
        return path
    try:
        os.makedirs(PRETRAINED_CACHE, exist_ok=True)
    except OSError as e:
        raise UserError(f"{PRETRAINED_CACHE}: cannot write there ({e.strerror or e})")
    url = f"{os.environ.get('CYCLEGAN_MODELS_URL', MODELS_URL).rstrip('/')}/{name}.pth"
    download(url, path, hint="or set CYCLEGAN_MODELS_URL to a mirror")
    try:
        load_weights(path)
    except Exception:
        os.remove(path)
        raise RunFailure(f"{url} did not give a weights file torch can read; removed it, run again to download "
                         "it anew")
    return path


def _input_name(path):
    """my_photos for a folder my_photos/, clip for a file clip.mp4."""
    name = os.path.basename(os.path.normpath(path))
    return name if os.path.isdir(path) else os.path.splitext(name)[0]


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def generator_states(weights, directions):
    """{direction: (file, state_dict)} from a training output folder, a bare generator file
    (ours or the authors'), or train.py's checkpoint.pth (which holds both generators)."""
    if os.path.isdir(weights):
        files = {d: os.path.join(weights, f"net{DIRECTIONS[d].generator}.pth") for d in directions}
        for path in files.values():
            if not os.path.isfile(path):
                raise UserError(f"{path}: not found; --weights must be a folder written by train.py")
        return {d: (path, _read(path)) for d, path in files.items()}
    if not os.path.isfile(weights):
        raise UserError(f"--weights {weights}: no such file or folder")
    state = _read(weights)
    if isinstance(state, dict) and "model" in state:
        return {d: (weights, state["model"][DIRECTIONS[d].generator]) for d in directions}
    if len(directions) > 1:
        raise UserError(f"{weights}: holds one generator; add --direction A2B or B2A")
    return {directions[0]: (weights, state)}


def _read(path):
    try:
        return _load(os.path.abspath(path), os.stat(path).st_mtime_ns)
    except Exception as e:
        raise UserError(f"{path}: not a weights file torch can read safely ({type(e).__name__})")


@functools.lru_cache(maxsize=2)  # holds_both and generator_states may both read one checkpoint.pth
def _load(path, mtime_ns):
    return load_weights(path)


def build_generator(path, state, ngf, n_blocks, device):
    """A Generator holding `state`; --ngf and --n_blocks default to what the file holds."""
    found = architecture(state)
    if found is None:
        raise UserError(f"{path}: holds no CycleGAN generator (no model.1.weight)")
    ngf = found[0] if ngf is None else ngf
    n_blocks = found[1] if n_blocks is None else n_blocks
    G = Generator(ngf=ngf, n_blocks=n_blocks)
    problem = _first_mismatch(G.state_dict(), state)
    layout = other_layout(state)
    if problem and layout:
        raise UserError(f"{path}: holds a generator in another layout ({'; '.join(layout)}); test.py reads the "
                        "authors' layout (residual blocks under model.N.conv_block, InstanceNorm without weights), "
                        "which train.py writes")
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


def other_layout(state):
    """How a generator state_dict departs from the authors' layout, as other CycleGAN code
    saves it: residual blocks named otherwise, or norm layers with weights of their own."""
    parts = [key.split(".") for key in state]
    blocks = sorted({".".join(p[:3]) for p in parts if len(p) == 5 and p[0] == "model" and p[2] != "conv_block"})
    norms = [key for key in state if key.endswith(".weight") and getattr(state[key], "ndim", 0) == 1]
    found = [f"residual blocks under {blocks[0]}"] if blocks else []
    if any(key.endswith("running_mean") for key in state):
        found.append("BatchNorm layers")
    elif norms:
        found.append(f"InstanceNorm with affine weights ({norms[0]})")
    return found


def _first_mismatch(expected, state):
    for key, tensor in expected.items():
        if key not in state:
            return f"{key} is missing"
        shape = tuple(getattr(state[key], "shape", ()))
        if shape != tuple(tensor.shape):
            return f"{key} has shape {shape}, expected {tuple(tensor.shape)}"
    unexpected = [key for key in state if key not in expected]
    return f"unexpected key {unexpected[0]}" if unexpected else None


INPUTS = f"images or videos ({', '.join(IMG_EXTENSIONS + VIDEO_EXTENSIONS)})"


def list_inputs(path):
    """The images and videos to translate: `path` itself if it is a file, else the usable
    files directly in the folder; with the skipped (path, reason) pairs."""
    if os.path.isdir(path):
        return list_images(path, check_input, INPUTS)
    reason = check_input(path)
    if reason is not None:
        raise UserError(f"{path}: {reason}")
    return [path], []


def check_input(path):
    """Why `path` cannot be translated, or None."""
    if is_video(path):
        return check_video(path)
    if not path.lower().endswith(IMG_EXTENSIONS):
        return "a folder" if os.path.isdir(path) else "not an image or video file"
    return check_image(path)


def output_names(paths):
    """<stem> per input; files that share a stem (x.jpg, x.png) keep their extension."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = collections.Counter(stems)
    return [stem if counts[stem] == 1 else os.path.basename(p).replace(".", "_")
            for stem, p in zip(stems, paths)]


def run_direction(G, paths, results, direction, device, args, done, *, G_back=None):
    """Translate the images and videos in `paths` with G, adding the name of each file written
    into results/<direction> to `done`. A video that turns out to be unreadable halfway is
    skipped with a line naming it (an error, when it was the only input)."""
    names = dict(zip(paths, output_names(paths)))
    images = [p for p in paths if not is_video(p)]
    run_images(G, images, [names[p] for p in images], results, direction, device, args, done, G_back=G_back)
    translator = Translator(G, None, device, use_amp(args.amp, device, training=False))
    for path in filter(is_video, paths):
        try:
            done.append(run_video(translator, path, names[path], results, direction, args))
        except VideoError as e:
            if len(paths) == 1:
                raise UserError(f"{path}: {e}")
            tqdm.write(f"skipped {path}: {e}", file=sys.stderr)


def run_images(G, paths, names, results, direction, device, args, done, *, G_back=None):
    """Translate `paths` with G, up to --batch_size images of one size at a time, while worker
    processes read the next images and a thread writes the PNGs; adds the files to `done`.
    With G_back (the generator for the way back) the reconstructions are written too."""
    if not paths:
        return
    domain = DIRECTIONS[direction].source
    folders = [direction, f"real_{domain}"] + ([f"rec_{domain}"] if G_back is not None else [])
    for folder in folders:
        os.makedirs(os.path.join(results, folder), exist_ok=True)
    loader = torch.utils.data.DataLoader(ImageFiles(paths), batch_size=None, num_workers=args.workers,
                                         pin_memory=device.type == "cuda")
    writes = []
    translator = Translator(G, G_back, device, use_amp(args.amp, device, training=False))
    with ThreadPoolExecutor(max_workers=1) as writer, tqdm(desc=direction, total=len(paths)) as bar:
        for images, indices in same_size_batches(loader, args.batch_size):
            fakes, recs = translator(images, [names[i] for i in indices])
            for image, fake, rec, i in zip(images, fakes, recs, indices):
                writes.append(writer.submit(save_images, image, fake, rec, results, direction, names[i]))
                done.append(f"{names[i]}.png")
            bar.update(len(indices))
        for write in writes:
            write.result()  # a failed write (a full disk) raises here


def run_video(translator, path, name, results, direction, args):
    """Translate one video; returns the file written. The input as the network saw it
    (upright) goes to real_<domain>/, the translation (beside the input with --side_by_side)
    to <direction>/, each as <name>.mp4."""
    file = f"{name}.mp4"
    real, fake = (os.path.join(results, folder, file) for folder in (f"real_{DIRECTIONS[direction].source}", direction))
    for folder in map(os.path.dirname, (real, fake)):
        os.makedirs(folder, exist_ok=True)

    def generate(frames):
        return translator(frames, [os.path.basename(path)])[0]

    with VideoReader(path) as video, tqdm(desc=f"{direction} {os.path.basename(path)}", total=video.frame_count(),
                                         unit="frame", smoothing=0) as bar:
        translate_frames(video, generate, real, fake, args.batch_size, side_by_side=args.side_by_side,
                         progress=bar.update)
        bar.total = bar.n  # the count was an estimate from the duration (mkv, webm)
    return file


class Translator:
    """G, and G_back where given, on the device. A batch too large for the GPU's memory is
    translated by CPU copies of them instead, with a warning naming its images."""

    def __init__(self, G, G_back, device, amp):
        self.nets, self.device, self.on_cpu = (G, G_back), device, None
        self.autocast = torch.autocast(device.type, dtype=amp_dtype(device), enabled=amp)

    def __call__(self, images, names):
        """The translations and reconstructions (None where there is no G_back), on the CPU."""
        try:
            with self.autocast:
                return self._run(*self.nets, images.to(self.device, non_blocking=True))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if self.on_cpu is None:
                self.on_cpu = [None if net is None else copy.deepcopy(net).cpu() for net in self.nets]
            height, width = images.shape[-2:]
            tqdm.write(f"warning: {', '.join(names)} ({width}x{height}) does not fit in {self.device}'s memory; "
                       "translated on the CPU", file=sys.stderr)
            return self._run(*self.on_cpu, images)

    @staticmethod
    def _run(G, G_back, images):
        fakes = translate(G, images)
        recs = [None] * len(fakes) if G_back is None else translate(G_back, fakes).float().cpu()
        return fakes.float().cpu(), recs



def save_images(image, fake, rec, results, direction, name):
    domain = DIRECTIONS[direction].source
    save_image(image * 0.5 + 0.5, os.path.join(results, f"real_{domain}", f"{name}.png"))
    save_image(fake * 0.5 + 0.5, os.path.join(results, direction, f"{name}.png"))
    if rec is not None:
        save_image(rec * 0.5 + 0.5, os.path.join(results, f"rec_{domain}", f"{name}.png"))


def write_index(results, done, reconstructed, weights):
    """index.html: which weights made it, a link to each direction, then each input beside its
    translation and, where the generator for the way back was there, its reconstruction
    (images only); file names as captions, images and videos as wide as the page allows,
    loaded as they scroll into view, and relative links, so that the folder can be zipped
    and shared. `done` holds the file names written per direction."""
    parts = ["<!doctype html><meta charset='utf-8'><title>CycleGAN results</title>",
             "<style>body{font-family:sans-serif} table{width:100%;table-layout:fixed} "
             "td{padding:4px;vertical-align:top;text-align:center} img,video{width:100%;display:block}</style>",
             f"<p>Translated by {html.escape(weights)}</p>",
             "<p>" + " | ".join(f"<a href='#{d}'>{d} ({_count(files)})</a>" for d, files in done.items()) + "</p>"]
    for direction, files in done.items():
        domain = DIRECTIONS[direction].source
        columns = [("input", f"real_{domain}"), (direction, direction)]
        columns += [("reconstruction", f"rec_{domain}")] if reconstructed[direction] else []
        parts.append(f"<h2 id='{direction}'>{direction} ({_count(files)})</h2><table><tr>"
                     + "".join(f"<th>{title}</th>" for title, _ in columns) + "</tr>")
        for file in files:
            parts.append("<tr>" + "".join(_cell(folder, file) for _, folder in columns) + "</tr>")
        parts.append("</table>")
    with open(os.path.join(results, "index.html"), "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def _count(files):
    videos = sum(map(is_video, files))
    counts = [(len(files) - videos, "image"), (videos, "video")]
    return ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for n, kind in counts if n) or "none"


def _cell(folder, file):
    """A table cell showing results/<folder>/<file> above its name; empty for a video's
    reconstruction, which is not made."""
    if folder.startswith("rec_") and is_video(file):
        return "<td></td>"
    src = html.escape(urllib.parse.quote(f"{folder}/{file}"), quote=True)  # a name may hold # or ?
    media = (f"<video controls preload='metadata' src='{src}'></video>" if is_video(file)
             else f"<img loading='lazy' src='{src}'>")
    return f"<td>{media}{html.escape(file)}</td>"


def back_generator(args, direction, generators, device):
    """The generator for the way back, where the weights hold both (a training output folder
    or checkpoint.pth); else None."""
    back = "B2A" if direction == "A2B" else "A2B"
    if back in generators:
        return generators[back]
    if args.pretrained or not holds_both(args.weights):
        return None
    return build_generator(*generator_states(args.weights, [back])[back], args.ngf, args.n_blocks, device)


def holds_both(weights):
    if os.path.isdir(weights):
        return all(os.path.isfile(os.path.join(weights, f"net{d.generator}.pth")) for d in DIRECTIONS.values())
    state = _read(weights)
    return isinstance(state, dict) and "model" in state


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, or a cluster's time limit) stops translation as Ctrl-C does."""


def _terminate(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def finish(args, done, backs):
    """index.html for the files translated, whenever any were; else the folders made for them
    are removed. Returns the number of files."""
    count = sum(map(len, done.values()))
    if count:
        made_by = f"the authors' {args.pretrained} generator" if args.pretrained else f"the weights in {args.weights}"
        write_index(args.results, {d: files for d, files in done.items() if files},
                    {d: backs[d] is not None for d in done}, made_by)
    else:
        for folder, _, _ in sorted(os.walk(args.results), reverse=True):  # sub-folders first
            with contextlib.suppress(OSError):  # not empty
                os.rmdir(folder)
    return count


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        inputs = resolve(args)
        device = pick_device(args.device)
        scans = {d: list_inputs(path) for d, path in inputs.items()}
        states = generator_states(args.weights, list(inputs))
        generators = {d: build_generator(*states[d], args.ngf, args.n_blocks, device) for d in inputs}
        backs = {d: back_generator(args, d, generators, device) for d in inputs}
        make_results_folder(args.results)
    except UserError as e:
        fail(f"test.py: error: {e}")
    except RunFailure as e:
        fail(f"test.py: error: {e}", 1)
    report_skipped([entry for _, skipped in scans.values() for entry in skipped])
    amp = use_amp(args.amp, device, training=False)
    print(f"device {device} ({precision_name(amp_dtype(device) if amp else None)})")
    done = {d: [] for d in inputs}
    try:
        with sigterm_as_interrupt():
            for d in inputs:
                run_direction(generators[d], scans[d][0], args.results, d, device, args, done[d], G_back=backs[d])
    except UserError as e:  # the only input, a video, turned out unreadable halfway
        finish(args, done, backs)
        fail(f"test.py: error: {e}")
    except KeyboardInterrupt as e:
        count = finish(args, done, backs)
        kept = f"the files translated so far ({count}) are in {args.results}" if count else "nothing was translated"
        fail(f"test.py: interrupted; {kept}", 143 if isinstance(e, Terminated) else 130)
    except OSError as e:  # a full disk while writing results
        finish(args, done, backs)
        fail(f"test.py: error: {e.strerror or e}: {e.filename or ''}", 1)
    if not finish(args, done, backs):
        fail("test.py: error: nothing could be translated (see the skipped files above)")
    print(f"results in {args.results} ({os.path.join(args.results, 'index.html')})")


if __name__ == "__main__":
    main(sys.argv[1:])
