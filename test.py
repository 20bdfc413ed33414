"""Translate images and videos with trained CycleGAN generators, at their native size.

    python test.py --dataroot datasets/horse2zebra            # testA -> B and testB -> A
    python test.py --input my_photos --weights horse2zebra.pth --direction A2B
    python test.py --input clip.mp4 --weights output/horse2zebra --direction A2B

Writes RESULTS/A2B/<name>.png and RESULTS/B2A/<name>.png (the translations), RESULTS/real_A/
and RESULTS/real_B/ (the inputs as the network saw them) and RESULTS/index.html; a video
becomes <name>.mp4 in the same folders. In order: the options, the inputs, the translations,
the page; weights.py loads the generators and results_page.py writes index.html.
"""
import collections
import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import os
import signal
import sys

import torch
from PIL import Image
from tqdm import tqdm

from datasets import (HOST_BYTES_PER_PIXEL, IMG_EXTENSIONS, ImageFiles, check_image, domain_dir,
                      fetch_dataset, from_pixels, list_images, pixel_limit, to_pixels)
from results_page import write_index
from tiles import translate_within
from utils import (DIRECTIONS, ArgumentParser, Behind, RunFailure, UserError, add_amp_argument,
                   add_device_argument, add_workers_argument, amp_dtype, atomic_write,
                   atomic_write_text, claimed, default_output, empty_cache, fail,
                   is_out_of_memory, pick_device, precision_name, print_any_file_name,
                   report_skipped, require, same_size_batches, set_fp32_precision, usable_cores,
                   use_amp)
from video import (VIDEO_EXTENSIONS, VideoError, VideoReader, check_video, is_video,
                   translate_frames)
from weights import MODELS_URL, PRETRAINED, fetch_pretrained, load_generators, pretrained_path


def build_parser():
    p = ArgumentParser(description="Translate images and videos A->B and B->A with trained "
                       "generators.")
    _add_input_options(p)
    p.add_argument("--ngf", type=int,
                   help="generator filters in the first layer (default: read from the weights)")
    p.add_argument("--n_blocks", type=int,
                   help="residual blocks per generator (default: read from the weights)")
    add_device_argument(p)
    p.add_argument("--batch_size", type=int, default=1,
                   help="images of one size, or frames of a video, translated together; more is "
                   "faster on a GPU, and a batch beyond --memory_gb runs in parts that fit "
                   "(default: 1)")
    p.add_argument("--side_by_side", action="store_true",
                   help="videos: each frame of the translated video shows the input on the left "
                   "and its translation on the right, as demonstrations show them")
    p.add_argument("--memory_gb", type=float,
                   help="memory one translation may use: images run whole, as many together "
                   "as need a quarter of this or less; one that alone needs more runs in tiles, "
                   "with the same pixels in fp32 (under bf16, as close as bf16 is to fp32) "
                   "(default: 3/4 of the free GPU memory, or of the available RAM on a CPU)")
    p.add_argument("--max_megapixels", type=float,
                   help="skip images larger than this; translated in tiles, a 200 MP photo "
                   f"needs about {HOST_BYTES_PER_PIXEL * 200 // 1000} GB of memory (default: "
                   "what 3/4 of the available memory holds, at least Pillow's 179)")
    p.add_argument("--overwrite", action="store_true",
                   help="translate every input again; by default a rerun into the same --results "
                   "skips the inputs whose outputs a run with the same weights and precision "
                   "completed, as after Ctrl-C or a time limit")
    add_amp_argument(p, training=False)
    add_workers_argument(p, "image-loading")
    return p


def _add_input_options(p):
    """What is translated, with which weights, and where the results go."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataroot", help="dataset folder: translates testA/ (or test/A) and "
                        "testB/ (or test/B); one of the authors' datasets is downloaded there "
                        "first if missing")
    source.add_argument("--input", help="your own images and videos to translate in --direction: "
                        "a folder of them, or one file")
    p.add_argument("--direction", choices=("A2B", "B2A", "both"),
                   help="which generator(s) to run (default: both with --dataroot, A2B with "
                   "--input)")
    p.add_argument("--weights", help="folder with netG_A2B.pth and netG_B2A.pth (train.py's "
                   "--output) or with latest_net_G_A.pth and latest_net_G_B.pth (the authors' "
                   "checkpoints/NAME), train.py's checkpoint.pth, or one generator .pth file such "
                   "as the authors' horse2zebra.pth (default: output/<dataroot name>)")
    p.add_argument("--phase", default="test", help="with --dataroot, the split to translate: "
                   "PHASEA/ and PHASEB/ (default: test)")
    p.add_argument("--num_test", type=int, help="translate the first N inputs of each direction, "
                   "by name (default: all)")
    p.add_argument("--epoch", help="the --weights folder's snapshot of epoch N (train.py's "
                   "N_netG_A2B.pth, the authors' N_net_G_A.pth) instead of its latest weights; "
                   "results go to <weights folder>/results_epochN (default: the latest)")
    p.add_argument("--pretrained", metavar="NAME", choices=sorted(PRETRAINED),
                   help="use the authors' published generator NAME (downloaded once into "
                   f"output/pretrained/, from $CYCLEGAN_MODELS_URL or {MODELS_URL}) on --input, "
                   "in the one direction it translates: " + ", ".join(PRETRAINED))
    p.add_argument("--results", help="where translations and index.html go (default: <weights "
                   "folder>/results, or <weights folder>/results_<input folder name> with --input)")


def resolve(args):
    """Check the options, fill in the defaults that depend on others; returns {direction: input
    folder}. Downloads nothing: --pretrained's file is fetched once the options are known good."""
    require(args, 0, "workers")
    require(args, 1, "ngf", "n_blocks", "batch_size", "num_test")
    require(args, 0.1, "memory_gb", "max_megapixels")
    if args.pretrained:
        check_pretrained(args)
    if args.dataroot is not None:
        directions = ("A2B", "B2A") if args.direction in (None, "both") else (args.direction,)
        inputs = {d: domain_dir(args.dataroot, args.phase, DIRECTIONS[d].source)
                  for d in directions}
        args.weights = args.weights or default_output(args.dataroot)
    else:
        if args.direction == "both":
            raise UserError("--direction both needs --dataroot; with --input choose A2B or B2A")
        if args.weights is None and not args.pretrained:
            raise UserError("--input needs --weights (a training output folder or a generator "
                            ".pth file)")
        if not os.path.exists(args.input):
            raise UserError(f"--input {args.input}: no such file or folder")
        if args.pretrained:
            args.weights = pretrained_path(args.pretrained)
        inputs = {args.direction or "A2B": args.input}
    if args.results is None:
        base = (args.weights if os.path.isdir(args.weights)
                else os.path.dirname(os.path.abspath(args.weights)))
        name = "_".join(filter(None, ["results", args.pretrained,
                                      args.input and _input_name(args.input),
                                      args.epoch and f"epoch{args.epoch}"]))
        args.results = os.path.join(base, name)
    for folder in filter(os.path.isdir, inputs.values()):
        if _inside(args.results, folder):
            raise UserError(f"--results {args.results}: is inside the input folder {folder}; "
                            "choose another")
    return inputs


def check_pretrained(args):
    """--pretrained goes with --input, without --weights, in its one direction."""
    name, back = args.pretrained, PRETRAINED[args.pretrained]
    if args.dataroot is not None or args.weights is not None:
        raise UserError(f"--pretrained {name} translates a folder you give with --input (for a "
                        "dataset: --input datasets/NAME/testA), and takes no --dataroot or "
                        "--weights")
    if args.direction not in (None, "A2B"):
        other = f"use --pretrained {back}" if back else "no model for the other way was published"
        raise UserError(f"--pretrained {name} translates one way only (A2B, as its name says); "
                        f"for the other way, {other}")


def _input_name(path):
    """my_photos for a folder my_photos/, clip for a file clip.mp4."""
    name = os.path.basename(os.path.normpath(path))
    return name if os.path.isdir(path) else os.path.splitext(name)[0]


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


INPUTS = f"images or videos ({', '.join(IMG_EXTENSIONS + VIDEO_EXTENSIONS)})"


def list_inputs(path, max_pixels):
    """The images and videos to translate: `path` itself if it is a file, else the usable
    files directly in the folder; with the skipped (path, reason) pairs."""
    check = functools.partial(check_input, max_pixels=max_pixels)
    if os.path.isdir(path):
        return list_images(path, check, INPUTS)
    reason = check(path)
    if reason is not None:
        raise UserError(f"{path}: {reason}")
    return [path], []


def check_input(path, max_pixels):
    """Why `path` cannot be translated, or None."""
    if is_video(path):
        return check_video(path)
    if not path.lower().endswith(IMG_EXTENSIONS):
        return "a folder" if os.path.isdir(path) else "not an image or video file"
    return check_image(path, max_pixels)


def output_names(paths):
    """<stem> per input; files that share a stem (x.jpg, x.png) keep their extension."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = collections.Counter(stems)
    return [stem if counts[stem] == 1 else os.path.basename(p).replace(".", "_")
            for stem, p in zip(stems, paths)]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the translation of every direction shares."""
    results: str  # the folder the translations and index.html go to
    device: torch.device
    amp: bool  # autocast, as --amp decided for this device
    precision: str  # what the generators compute in: float32, or autocast's dtype
    batch_size: int
    workers: int  # image-loading processes
    side_by_side: bool  # videos: input and translation in one frame
    memory: float | None  # bytes one translation may use (--memory_gb); None: tiles.py decides


class Translator:
    """The one place a batch of images is translated: by G, and G_back where given, on the
    device, whole or in tiles within the memory budget (tiles.py), with a line saying so. A
    batch that still does not fit in the GPU's memory is translated by CPU copies of the
    generators, with a warning naming its images. Pixels go to the device and come back as
    uint8, normalised and rounded there: a quarter of the bytes of floats each way."""

    def __init__(self, G, G_back, settings):
        self.G, self.G_back, self.device, self.on_cpu = G, G_back, settings.device, None
        self.memory = settings.memory
        self.autocast = torch.autocast(self.device.type, dtype=amp_dtype(self.device),
                                       enabled=settings.amp)
        # In fp32 tiles give the whole pass's pixels; in bf16 or fp16 the two round apart as
        # far as each is from fp32 (docs/benchmarks.md).
        half = "bf16" if amp_dtype(self.device) == torch.bfloat16 else "fp16"
        self.likeness = (f"within {half} rounding of whole" if settings.amp
                         else "same pixels as whole")

    def __call__(self, pixels, names, reconstruct=True):
        """The translations and reconstructions (None where there is no G_back, or without
        `reconstruct`) of a batch of uint8 pixels, as uint8 pixels on the CPU."""
        try:
            with self.autocast:
                on_device = pixels.to(self.device, non_blocking=True)
                return self._run(self.G, self.G_back, on_device, names, reconstruct)
        except RuntimeError as e:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(e):
                raise
            empty_cache(self.device)
            if self.on_cpu is None:
                self.on_cpu = [None if net is None else copy.deepcopy(net).cpu()
                               for net in (self.G, self.G_back)]
            height, width = pixels.shape[-2:]
            tqdm.write(f"warning: {', '.join(names)} ({width}x{height}) does not fit in "
                       f"{self.device}'s memory; translated on the CPU", file=sys.stderr)
            return self._run(*self.on_cpu, pixels, names, reconstruct)

    def _run(self, G, G_back, pixels, names, reconstruct):
        fakes = self._translate(G, from_pixels(pixels), names, "translated")
        if G_back is None or not reconstruct:
            return to_pixels(fakes).cpu(), [None] * len(fakes)
        recs = self._translate(G_back, fakes, names, "reconstructed")
        return to_pixels(fakes).cpu(), to_pixels(recs).cpu()

    def _translate(self, G, images, names, what):
        with TileBar(f"{names[0]} {what} in tiles") as bar:
            output, tiled = translate_within(G, images, self.memory, progress=bar.update)
        if tiled:
            height, width = images.shape[-2:]
            budget = f"{self.memory / 1e9:.1f} GB" if self.memory else "the free memory"
            tqdm.write(f"{', '.join(names)} ({width}x{height}) {what} in tiles, to stay "
                       f"within {budget} (--memory_gb); {self.likeness}")
        return output


class TileBar:
    """A progress bar for the tiles of one large image, opened at its first tile: an image
    translated whole has none."""

    def __init__(self, description):
        self.description, self.bar = description, None

    def __enter__(self):
        return self

    def update(self, done, total):
        if total > 1 and self.bar is None:
            self.bar = tqdm(desc=self.description, total=total, unit="tile", leave=False)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def translate_direction(direction, names, translator, settings):
    """Translate the images and videos `names` maps to their output names, yielding the name
    of each file written into results/<direction>. A video that turns out to be unreadable
    halfway is skipped with a line naming it (an error, when it was the only input)."""
    images = {path: name for path, name in names.items() if not is_video(path)}
    yield from translate_images(direction, images, translator, settings)
    for path in filter(is_video, names):
        try:
            yield translate_video(direction, path, names[path], translator, settings)
        except VideoError as e:
            if len(names) == 1:
                raise UserError(f"{path}: {e}")
            tqdm.write(f"skipped {path}: {e}", file=sys.stderr)


def output_files(results, direction, path, name, reconstructs):
    """What translating `path` writes: its translation, the input as the network saw it and,
    for an image, where G_back is there, its reconstruction."""
    domain = DIRECTIONS[direction].source
    folders = [direction, f"real_{domain}"]
    if is_video(path):
        return [os.path.join(results, folder, f"{name}.mp4") for folder in folders]
    folders += [f"rec_{domain}"] if reconstructs else []
    return [os.path.join(results, folder, f"{name}.png") for folder in folders]


MADE_WITH = ".translated_with.json"


def made_with(G, G_back, settings):
    """A digest of what decides a direction's pixels: the generators' weights, the precision
    and, for videos, --side_by_side."""
    digest = hashlib.sha256(f"{settings.precision} {settings.side_by_side}".encode())
    for net in filter(None, (G, G_back)):
        for value in net.state_dict().values():
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class Finished:
    """What a rerun into the same results folder need not translate again: the inputs whose
    outputs are all there (each written whole, under a temporary name first), made with the
    same weights and precision (MADE_WITH keeps a digest of them per direction). Where the
    folder holds outputs made otherwise, every input is translated again, and the digest is
    recorded only once they all are, so that a stop halfway keeps no stale output."""

    def __init__(self, results, overwrite):
        self.path, self.overwrite = os.path.join(results, MADE_WITH), overwrite
        try:
            with open(self.path) as f:
                self.record = json.load(f)
        except (OSError, ValueError):
            self.record = {}

    def start(self, direction, digest, files):
        """The inputs of `files` ({path: its output files}) that need no translating."""
        complete = {path for path, outputs in files.items()
                    if all(map(os.path.isfile, outputs))}
        if self.record.get(direction) == digest and not self.overwrite:
            return complete
        if any(os.path.isfile(f) for outputs in files.values() for f in outputs):
            self.record.pop(direction, None)
            self._save()
            if not self.overwrite:
                print(f"{direction}: the results there were made with other weights or "
                      "precision; translating every input again")
            return set()
        self.end(direction, digest)
        return set()

    def end(self, direction, digest):
        self.record[direction] = digest
        self._save()

    def _save(self):
        atomic_write_text(json.dumps(self.record, indent=2) + "\n", self.path)


def translate_images(direction, names, translator, settings):
    """Translate the images `names` maps to their output names, up to --batch_size of one size
    at a time, while worker processes read the next images and threads write the PNGs; yields
    each file. Where the translator has G_back, the reconstructions are written too."""
    if not names:
        return
    domain = DIRECTIONS[direction].source
    folders = [direction, f"real_{domain}"]
    folders += [f"rec_{domain}"] if translator.G_back is not None else []
    for folder in folders:
        os.makedirs(os.path.join(settings.results, folder), exist_ok=True)
    paths, outputs = list(names), list(names.values())
    loader = torch.utils.data.DataLoader(ImageFiles(paths, translator.G.in_ch), batch_size=None,
                                         num_workers=settings.workers)
    pin = settings.device.type == "cuda"
    with png_writer() as writer, tqdm(desc=direction, total=len(paths)) as bar:
        for pixels, indices in same_size_batches(loader, settings.batch_size, pin):
            fakes, recs = translator(pixels, [outputs[i] for i in indices])
            for image, fake, rec, i in zip(pixels, fakes, recs, indices):
                writer.submit(save_images, image, fake, rec, settings.results, direction,
                              outputs[i])
                yield f"{outputs[i]}.png"
            bar.update(len(indices))


def png_writer():
    """A thread per core writes the PNGs (encoding one releases the GIL: two threads wrote
    1.9 times as many as one on 2 cores, docs/benchmarks.md), each with one more image
    waiting at most, so that a GPU translating faster than they write waits for them rather
    than filling the host's memory with translations."""
    threads = usable_cores()
    return Behind(threads, limit=2 * threads)


def save_images(image, fake, rec, results, direction, name):
    """An input and its translation (and reconstruction, unless None), CxHxW pixels, as PNGs:
    RGB for 3 channels, grayscale for 1."""
    domain = DIRECTIONS[direction].source
    save_png(image, os.path.join(results, f"real_{domain}", f"{name}.png"))
    save_png(fake, os.path.join(results, direction, f"{name}.png"))
    if rec is not None:
        save_png(rec, os.path.join(results, f"rec_{domain}", f"{name}.png"))


def save_png(pixels, path):
    """Written under a temporary name, then renamed: a PNG that exists is complete, whatever
    stopped the run, and a rerun can skip its input."""
    if pixels.is_floating_point():  # a grayscale input, on the 0-255 scale
        pixels = pixels.add(0.5).clamp(0, 255).to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def translate_video(direction, path, name, translator, settings):
    """Translate one video; returns the file written. The input as the network saw it
    (upright) goes to real_<domain>/, the translation (beside the input with --side_by_side)
    to <direction>/, each as <name>.mp4."""
    if (translator.G.in_ch, translator.G.out_ch) != (3, 3):
        raise VideoError(f"videos are RGB, and this generator translates {translator.G.in_ch}-"
                         f"channel images into {translator.G.out_ch}-channel ones")
    file = f"{name}.mp4"
    real, fake = (os.path.join(settings.results, folder, file)
                  for folder in (f"real_{DIRECTIONS[direction].source}", direction))
    for folder in map(os.path.dirname, (real, fake)):
        os.makedirs(folder, exist_ok=True)

    def generate(frames):
        return translator(frames, [os.path.basename(path)], reconstruct=False)[0]

    with VideoReader(path) as video, tqdm(desc=f"{direction} {os.path.basename(path)}",
                                          total=video.frame_count(), unit="frame",
                                          smoothing=0) as bar:
        translate_frames(video, generate, real, fake, settings.batch_size,
                         side_by_side=settings.side_by_side, pin=settings.device.type == "cuda",
                         progress=bar.update)
        bar.total = bar.n  # the count was an estimate from the duration (mkv, webm)
    return file


def finish(args, translated, nets):
    """index.html for the files translated (in this run, or kept from one before), in order of
    name, whenever there are any; else the folders made for them are removed. Returns the
    number of files."""
    count = sum(map(len, translated.values()))
    if count:
        made_by = (f"the authors' {args.pretrained} generator" if args.pretrained
                   else f"the weights in {args.weights}")
        write_index(args.results, {d: sorted(files) for d, files in translated.items() if files},
                    {d: G_back is not None for d, (_, G_back) in nets.items()}, made_by)
    else:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(args.results, MADE_WITH))
        for folder, _, _ in sorted(os.walk(args.results), reverse=True):  # sub-folders first
            with contextlib.suppress(OSError):  # not empty
                os.rmdir(folder)
    return count


@contextlib.contextmanager
def one_line_errors():
    """A problem found before translating ends the run with one line: exit status 2 for a
    mistake the user can fix, 1 for a failure (a download)."""
    try:
        yield
    except UserError as e:
        fail(f"test.py: error: {e}")
    except RunFailure as e:
        fail(f"test.py: error: {e}", 1)


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


@contextlib.contextmanager
def page_however_it_stops(args, translated, nets):
    """Whatever stops translation early (Ctrl-C, SIGTERM, a video unreadable halfway, a full
    disk) leaves the page for the files finished, then one line and its exit status."""
    try:
        with sigterm_as_interrupt():
            yield
    except UserError as e:  # the only input, a video, turned out unreadable halfway
        finish(args, translated, nets)
        fail(f"test.py: error: {e}")
    except KeyboardInterrupt as e:
        count = finish(args, translated, nets)
        kept = (f"the files translated so far ({count}) are in {args.results}" if count
                else "nothing was translated")
        fail(f"test.py: interrupted; {kept}", 143 if isinstance(e, Terminated) else 130)
    except OSError as e:  # a full disk while writing results
        finish(args, translated, nets)
        fail(f"test.py: error: {e.strerror or e}: {e.filename or ''}", 1)


def main(argv=None):
    print_any_file_name()
    args = build_parser().parse_args(argv)
    with one_line_errors():
        if args.dataroot is not None:  # the authors' datasets on first use, as train.py
            fetch_dataset(args.dataroot)
        inputs = resolve(args)
        if args.pretrained:  # downloaded once the options are known to be good
            fetch_pretrained(args.pretrained)
        device = pick_device(args.device)
        max_pixels = pixel_limit(args.max_megapixels)
        scans = {d: list_inputs(path, max_pixels) for d, path in inputs.items()}
        scans = {d: (paths[:args.num_test], skipped) for d, (paths, skipped) in scans.items()}
        nets = load_generators(args.weights, list(inputs), args.ngf, args.n_blocks, device,
                               args.epoch)
        with claimed(args.results, "test.py", "--results"):
            translate_all(args, {d: paths for d, (paths, _) in scans.items()}, nets, device,
                          [entry for _, skipped in scans.values() for entry in skipped])
    print(f"results in {args.results} ({os.path.join(args.results, 'index.html')})")


def translate_all(args, inputs, nets, device, skipped):
    """Every direction's inputs into --results (but those a run before completed), then the
    page; one line and its exit status where that stops early."""
    report_skipped(skipped)
    set_fp32_precision("ieee")
    amp = use_amp(args.amp, device)
    precision = precision_name(amp_dtype(device) if amp else None)
    print(f"device {device} ({precision})")
    settings = Settings(results=args.results, device=device, amp=amp, precision=precision,
                        batch_size=args.batch_size, workers=args.workers,
                        side_by_side=args.side_by_side,
                        memory=args.memory_gb and args.memory_gb * 1e9)
    translated = {d: [] for d in inputs}
    finished = Finished(args.results, args.overwrite)
    with page_however_it_stops(args, translated, nets):
        for direction, (G, G_back) in nets.items():
            names = dict(zip(inputs[direction], output_names(inputs[direction])))
            files = {path: output_files(args.results, direction, path, name, G_back is not None)
                     for path, name in names.items()}
            digest = made_with(G, G_back, settings)
            done = finished.start(direction, digest, files)
            if done:
                print(f"{direction}: {len(done)} of {len(names)} inputs were translated by a "
                      "run before; translating the rest (--overwrite: all of them)")
            translated[direction] += [os.path.basename(files[path][0]) for path in done]
            todo = {path: name for path, name in names.items() if path not in done}
            translator = Translator(G, G_back, settings)
            for file in translate_direction(direction, todo, translator, settings):
                translated[direction].append(file)
            finished.end(direction, digest)
    if not finish(args, translated, nets):
        fail("test.py: error: nothing could be translated (see the skipped files above)")


if __name__ == "__main__":
    main(sys.argv[1:])
