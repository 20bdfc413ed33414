"""Unaligned image folders: finding them (the authors' datasets are downloaded on first use),
reading any common image file as RGB or grayscale, the training samples (an A image, a
randomly drawn B image, the same augmentation as the paper).

A dataset root holds `trainA/ trainB/ testA/ testB/` (the authors' layout) or
`train/A train/B test/A test/B`.
"""
import math
import os
import shutil
import sys
import tempfile
import zipfile

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from tiles import host_available_memory
from utils import ArgumentParser, RunFailure, UserError, describe, download, fail

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Pillow refuses images of over 179 MP as decompression bombs, yet phones take 200 MP photos,
# which test.py translates in tiles. The limit that matters is memory's: check_image refuses an
# image larger than the host could hold while translating it (a header that claims gigapixels
# among them), so Pillow's own guard is off.
Image.MAX_IMAGE_PIXELS = None
PILLOW_LIMIT = 2 * 89_478_485
# Host memory test.py needs per pixel of an image translated in tiles: a 200 MP photo peaked at
# 9.0 GB of the process's own memory (docs/benchmarks.md), besides the page cache of the file
# the tiles' activations wait in, which the system reclaims as it needs.
HOST_BYTES_PER_PIXEL = 45
IMAGES = f"images ({', '.join(IMG_EXTENSIONS)})"
def layout(split):
    """The folders one split needs, for messages: training reads train*, translation test*."""
    return f"DIR/{split}A and DIR/{split}B (or DIR/{split}/A and DIR/{split}/B)"


def domain_dir(dataroot, split, domain):
    """The folder of one domain ('A' or 'B') of one split ('train' or 'test')."""
    if not os.path.isdir(dataroot):
        raise UserError(f"--dataroot {dataroot}: no such folder; expected {layout(split)}")
    for candidate in (os.path.join(dataroot, split + domain),
                      os.path.join(dataroot, split, domain)):
        if os.path.isdir(candidate):
            return candidate
    raise UserError(f"{dataroot}: no folder {split}{domain} (or {split}/{domain}); expected "
                    f"{layout(split)}")


# The authors' datasets, downloaded on first use

DATASET_NAMES = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo",
                 "cezanne2photo", "ukiyoe2photo", "vangogh2photo", "maps", "cityscapes",
                 "facades", "iphone2dslr_flower", "ae_photos")
DATASETS_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
CITYSCAPES = ("cityscapes is not distributed by the CycleGAN authors: its licence requires each "
              "user to register at https://www.cityscapes-dataset.com and download it there "
              "(leftImg8bit and gtFine); put the photos in trainA and testA, the label images in "
              "trainB and testB")


def fetch_dataset(dataroot, allowed=True):
    """When `dataroot` does not exist and is named after one of the authors' datasets
    (datasets/horse2zebra), download that dataset's zip with a progress bar, check it, and
    unpack it there. An interrupted download goes on from where it stopped next time; the
    folder appears only once complete. `allowed=False` (under torchrun, where every process
    would download) says how to download it first instead."""
    name = os.path.basename(os.path.normpath(dataroot))
    if os.path.exists(dataroot) or name not in DATASET_NAMES:
        return
    if name == "cityscapes":
        raise UserError(CITYSCAPES)
    if not allowed:
        raise UserError(f"--dataroot {dataroot}: no such folder; download it first with "
                        f"`bash datasets/download.sh {dataroot}`")
    parent = os.path.dirname(os.path.abspath(dataroot))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"--dataroot {dataroot}: cannot create {parent} ({e.strerror or e})")
    url = f"{os.environ.get('CYCLEGAN_DATASETS_URL', DATASETS_URL).rstrip('/')}/{name}.zip"
    zip_path = os.path.join(parent, f"{name}.zip")
    print(f"{dataroot} is not here; downloading the authors' {name} from {url}")
    if not os.path.exists(zip_path):  # else an earlier run downloaded it but did not unpack it
        download(url, zip_path, hint="or set CYCLEGAN_DATASETS_URL to a mirror")
    _unpack(zip_path, name, dataroot, url)
    os.remove(zip_path)
    print(f"{name} is in {dataroot}")


def _unpack(zip_path, name, dataroot, url):
    """Unpack the zip's NAME/ folder as dataroot, after checking every member's CRC."""
    with tempfile.TemporaryDirectory(prefix=f".{name}.unpacking.",
                                     dir=os.path.dirname(zip_path)) as unpacking:
        try:
            with zipfile.ZipFile(zip_path) as z:
                if z.testzip() is not None:
                    raise zipfile.BadZipFile
                z.extractall(unpacking)
        except (zipfile.BadZipFile, EOFError):
            os.remove(zip_path)
            raise RunFailure(f"{url} gave a damaged zip; removed it, run again to download it "
                             "anew")
        unpacked = os.path.join(unpacking, name)
        missing = [f for f in ("trainA", "trainB", "testA", "testB")
                   if not os.path.isdir(os.path.join(unpacked, f))]
        if missing:
            raise RunFailure(f"{url} does not hold {name}/{missing[0]}; nothing was unpacked")
        shutil.move(unpacked, dataroot)


def list_images(folder, check=None, what=IMAGES):
    """Usable files directly in `folder`, sorted by name, and the skipped entries as
    (path, reason) pairs; an error when none is usable. `check` (default: check_image) gives
    the reason a file is skipped, or None; `what` names the usable files in that error."""
    check = check or check_image
    paths, skipped = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        reason = check(path)
        if reason is None:
            paths.append(path)
        else:
            skipped.append((path, reason))
    if not paths:
        raise UserError(f"{folder}: no usable {what}{_why_skipped(skipped)}")
    return paths, skipped


def _why_skipped(skipped, shown=3):
    if not skipped:
        return ""
    reasons = "; ".join(f"{os.path.basename(path)}: {reason}" for path, reason in skipped[:shown])
    return f"; skipped {len(skipped)}: {reasons}" + ("; ..." if len(skipped) > shown else "")


def pixel_limit(megapixels=None):
    """The most pixels an image may have: `megapixels` (test.py --max_megapixels), else what
    three quarters of the available memory holds at HOST_BYTES_PER_PIXEL, and never less than
    Pillow's own limit."""
    if megapixels is not None:
        return int(megapixels * 1e6)
    return max(PILLOW_LIMIT, host_available_memory() * 3 // 4 // HOST_BYTES_PER_PIXEL)


def check_image(path, max_pixels=None):
    """Why `path` cannot be trained on, or None. Reads only the header and the last bytes,
    so that a folder of thousands of photos is checked in seconds; only a JPEG or PNG whose
    end marker is missing (truncated, or followed by other data) is decoded to make sure.
    An image of over `max_pixels` (default: pixel_limit()) is refused before it is decoded."""
    if os.path.isdir(path):
        return "a folder"
    if not path.lower().endswith(IMG_EXTENSIONS):
        return "not an image file"
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            too_large = _over_limit(img, max_pixels or pixel_limit())
            if too_large:
                return too_large
            end_marker = END_MARKERS.get(img.format)
            if end_marker and not _ends_with(path, end_marker):
                img.draft("RGB", (64, 64))
                img.load()
    except (OSError, SyntaxError, ValueError) as e:
        return f"not a readable image ({describe(e)})"
    return None


def _over_limit(img, limit):
    if img.width * img.height <= limit:
        return None
    return (f"too large: {img.width}x{img.height} is {img.width * img.height / 1e6:.0f} MP, over "
            f"the {limit / 1e6:.0f} MP this machine's memory allows (test.py --max_megapixels "
            "sets the limit)")


END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _ends_with(path, marker, slack=16):
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - len(marker) - slack))
        return marker in f.read()


def load_image(path, min_size=None, channels=3):
    """Open any common image with its EXIF orientation applied: as 8-bit RGB, or with
    `channels` 1 as grayscale (the luma of colour images, as the authors' loader gives it).

    Palette, RGBA and CMYK convert directly. 16-bit and 32-bit grayscale are scaled to the
    0-255 range rather than clipped: to 8 bits for RGB, and as 32-bit floats ("F" mode), which
    keep their precision, for grayscale. With `min_size`, a large JPEG is decoded at a
    reduced scale that still covers min_size x min_size, which is much faster.
    """
    with Image.open(path) as img:
        if min_size is not None:
            img.draft("RGB" if channels == 3 else "L", (min_size, min_size))
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            img = _high_bit_depth(img, keep=channels == 1)
        return img.convert("RGB" if channels == 3 else "L") if img.mode != "F" else img


def _high_bit_depth(img, keep):
    pixels = np.asarray(img, dtype=np.float64)
    if pixels.max() > 255:
        pixels = pixels / 257.0
    if keep:
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.float32), mode="F")
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


def to_tensor(img):
    """PIL image (RGB, L, or F on the 0-255 scale) to a CxHxW float tensor in [-1, 1]; an F
    image's bicubic resize may overshoot, which 8-bit images clip."""
    return from_pixels(TF.pil_to_tensor(img)).clamp_(-1, 1)


def from_pixels(pixels):
    """Pixels on the 0-255 scale (uint8, or floats from 16-bit grayscale), on any device, to
    floats in [-1, 1]: torchvision's to_tensor and normalize, operation for operation, so
    that translation sees what training saw."""
    return pixels.float().div(255).sub(0.5).div(0.5)


def to_pixels(images):
    """Floats in [-1, 1] to uint8 pixels, rounded as torchvision's save_image rounds."""
    return images.float().mul(0.5).add(0.5).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


# The authors' --preprocess choices; the first is the paper's.
PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
CROPPING = ("resize_and_crop", "crop", "scale_width_and_crop")  # all samples size x size


def augment(img, load_size, size, generator, flip=True, preprocess="resize_and_crop"):
    """The training transform of the authors' --preprocess (the paper's by default: bicubic
    resize to load_size x load_size, then a random size x size crop), then a random
    horizontal flip unless `flip` is False (the coin is tossed anyway, so that crops are the
    same either way). Randomness comes from `generator` only."""
    img = _scaled(img, load_size, size, preprocess)
    if preprocess in CROPPING:
        img = _random_crop(img, size, generator)
    if torch.rand((), generator=generator).item() < 0.5 and flip:
        img = TF.hflip(img)
    return img


def _scaled(img, load_size, size, preprocess):
    """resize_and_crop: load_size x load_size. scale_width(_and_crop): load_size wide, as tall
    as the aspect ratio says but at least `size`. crop: as it is, enlarged only where it is
    smaller than the crop. none: as it is. Sizes the crop does not fix are rounded to
    multiples of 4, which the generator's two down- and up-samplings need."""
    w, h = img.size
    if preprocess == "resize_and_crop":
        target = (load_size, load_size)
    elif preprocess.startswith("scale_width"):
        target = (max(int(load_size * h / w), size), load_size)
    elif preprocess == "crop":
        scale = max(1.0, size / min(w, h))
        target = (math.ceil(h * scale), math.ceil(w * scale))
    else:
        target = (h, w)
    if preprocess not in CROPPING:
        target = tuple(max(4, round(t / 4) * 4) for t in target)
    return img if target == (h, w) else TF.resize(img, list(target), InterpolationMode.BICUBIC)


def _random_crop(img, size, generator):
    w, h = img.size
    if w == h:  # one draw for both, as always: the paper's square crops stay as they were
        top, left = torch.randint(0, h - size + 1, (2,), generator=generator).tolist()
    else:
        top = int(torch.randint(0, h - size + 1, (), generator=generator))
        left = int(torch.randint(0, w - size + 1, (), generator=generator))
    return TF.crop(img, top, left, size, size)


def load_readable(paths, index, min_size, warned, channels=3):
    """paths[index] as load_image reads it; if it has become unreadable since the start-up
    check, warn once and take the next readable file instead, so that one bad file never
    ends an epoch."""
    for k in range(len(paths)):
        path = paths[(index + k) % len(paths)]
        try:
            return load_image(path, min_size, channels)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            if path not in warned:
                warned.add(path)
                print(f"warning: skipping {path}: {describe(e)}", file=sys.stderr)
    raise RuntimeError(f"no readable image left among {len(paths)} files in "
                       f"{os.path.dirname(paths[0])}")


class UnalignedDataset(torch.utils.data.Dataset):
    """Training pairs (A image, B image) with no correspondence between them.

    Indexed by (index_A, index_B, seed) triples from `EpochSampler`: every random choice of
    a sample is fixed by its triple, so a run resumed in the middle of an epoch sees the
    same images and crops as an uninterrupted one, whatever the number of workers.
    """

    def __init__(self, paths_A, paths_B, load_size, size, *, flip=True,
                 preprocess="resize_and_crop", channels=(3, 3)):
        self.paths_A, self.paths_B = paths_A, paths_B
        self.channels = dict(zip("AB", channels))  # per domain: 3 (RGB) or 1 (grayscale)
        self.load_size, self.size, self.flip = load_size, size, flip
        self.preprocess = preprocess
        # JPEGs decoded at a reduced scale where the image is resized anyway
        self.min_size = load_size if preprocess in ("resize_and_crop", "scale_width",
                                                    "scale_width_and_crop") else None
        self.warned = set()

    def __len__(self):
        return max(len(self.paths_A), len(self.paths_B))

    def __getitem__(self, key):
        index_A, index_B, seed = key
        generator = torch.Generator().manual_seed(seed)
        return {"A": self._sample(self.paths_A, index_A, generator, self.channels["A"]),
                "B": self._sample(self.paths_B, index_B, generator, self.channels["B"])}

    def _sample(self, paths, index, generator, channels):
        img = load_readable(paths, index, self.min_size, self.warned, channels)
        return to_tensor(augment(img, self.load_size, self.size, generator, self.flip,
                                 self.preprocess))


class EpochSampler(torch.utils.data.Sampler):
    """One epoch of (index_A, index_B, seed) triples, a pure function of (seed, epoch).

    An epoch has max(|A|, |B|) samples: A is visited in a shuffled order (cycling when B is
    larger), B is drawn at random for each sample, as in the authors' unaligned dataset.
    With `serial` (the authors' --serial_batches), A goes in order and B with it, cycling;
    the crops and flips stay random. `start` skips the samples already trained on when
    resuming mid-epoch. The DataLoader
    iterates its sampler in the main process, so `set_epoch` reaches persistent workers.

    Under torchrun, process `rank` of `world_size` takes every world_size-th triple of the
    rest of the epoch, like torch's DistributedSampler: the processes see different pairs,
    and as many each (the last few triples are repeated to make up the count). The sequence
    does not depend on the number of processes, so a run can resume with another one.
    """

    def __init__(self, n_A, n_B, seed, *, epoch=0, start=0, rank=0, world_size=1, serial=False):
        self.n_A, self.n_B, self.seed, self.serial = n_A, n_B, seed, serial
        self.n = max(n_A, n_B)
        self.rank, self.world_size = rank, world_size
        self.set_epoch(epoch, start)

    def set_epoch(self, epoch, start=0):
        self.epoch_seed, self.start = self.seed * 100_003 + epoch, start

    def __len__(self):
        return math.ceil(max(0, self.n - self.start) / self.world_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch_seed)
        order = torch.randperm(self.n, generator=g) % self.n_A
        draws_B = torch.randint(0, self.n_B, (self.n,), generator=g)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        if self.serial:  # drawn all the same, so that the seeds are those of a shuffled epoch
            order, draws_B = torch.arange(self.n) % self.n_A, torch.arange(self.n) % self.n_B
        rest = list(zip(order.tolist(), draws_B.tolist(), seeds.tolist()))[self.start:]
        rest += (rest * self.world_size)[:len(self) * self.world_size - len(rest)]
        return iter(rest[self.rank::self.world_size])


class ImageFiles(torch.utils.data.Dataset):
    """Images at native size for translation: (CxHxW pixels, index), or (None, index) with a
    warning for a file that cannot be read. RGB as uint8 pixels, not floats: a quarter of the
    bytes to pass from the workers and to copy to a GPU, which normalises them itself. With
    `channels` 1, grayscale as floats on the 0-255 scale, which keep 16-bit precision."""

    def __init__(self, paths, channels=3):
        self.paths, self.channels = paths, channels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            pixels = TF.pil_to_tensor(load_image(self.paths[i], channels=self.channels))
            return (pixels if self.channels == 3 else pixels.float()).contiguous(), i
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            print(f"warning: skipping {self.paths[i]}: {describe(e)}", file=sys.stderr)
            return None, i


def download_main(argv):
    """datasets/download.sh: download the dataset named by argv[0], a folder whose name is
    one of DATASET_NAMES; one line and exit status 2 or 1 when it cannot."""
    parser = ArgumentParser(prog="download.sh", description="Download one of the authors' "
                            "CycleGAN datasets into a folder named after it, as train.py and "
                            "test.py do on first use.")
    parser.add_argument("dataroot", metavar="NAME_OR_FOLDER",
                        help="a dataset name (into datasets/NAME) or a folder named after one: "
                        f"{', '.join(DATASET_NAMES)}")
    args = parser.parse_args(argv)
    name = os.path.basename(os.path.normpath(args.dataroot))
    try:
        if name not in DATASET_NAMES:
            raise UserError(f"unknown dataset '{name}'; known: {' '.join(DATASET_NAMES)}")
        if os.path.exists(args.dataroot):
            print(f"{args.dataroot} is already there")
        fetch_dataset(args.dataroot)
    except UserError as e:
        fail(f"download.sh: error: {e}")
    except RunFailure as e:
        fail(f"download.sh: error: {e}", 1)
    except KeyboardInterrupt:
        fail("download.sh: interrupted; run the same command again to continue the download", 130)
