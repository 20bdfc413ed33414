"""Unaligned image folders: finding them, reading any common image file as RGB, and the
training samples (an A image, a randomly drawn B image, the same augmentation as the paper).

A dataset root holds `trainA/ trainB/ testA/ testB/` (the authors' layout) or
`train/A train/B test/A test/B`.
"""
import math
import os
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from utils import UserError, describe

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
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


def check_image(path):
    """Why `path` cannot be trained on, or None. Reads only the header and the last bytes,
    so that a folder of thousands of photos is checked in seconds; only a JPEG or PNG whose
    end marker is missing (truncated, or followed by other data) is decoded to make sure."""
    if os.path.isdir(path):
        return "a folder"
    if not path.lower().endswith(IMG_EXTENSIONS):
        return "not an image file"
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            end_marker = END_MARKERS.get(img.format)
            if end_marker and not _ends_with(path, end_marker):
                img.draft("RGB", (64, 64))
                img.load()
    except Image.DecompressionBombError as e:
        return f"too large to decode safely ({e})"
    except (OSError, SyntaxError, ValueError) as e:
        return f"not a readable image ({describe(e)})"
    return None


END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _ends_with(path, marker, slack=16):
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - len(marker) - slack))
        return marker in f.read()


def load_rgb(path, min_size=None):
    """Open any common image as 8-bit RGB with its EXIF orientation applied.

    Grayscale, palette, RGBA and CMYK convert directly; 16-bit and 32-bit grayscale are
    scaled down to 8 bits rather than clipped. With `min_size`, a large JPEG is decoded at
    a reduced scale that still covers min_size x min_size, which is much faster.
    """
    with Image.open(path) as img:
        if min_size is not None:
            img.draft("RGB", (min_size, min_size))
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            img = _high_bit_depth_to_l(img)
        return img.convert("RGB")


def _high_bit_depth_to_l(img):
    pixels = np.asarray(img, dtype=np.float64)
    if pixels.max() > 255:
        pixels = pixels / 257.0
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


def to_tensor(img):
    """PIL RGB image to a 3xHxW float tensor in [-1, 1]."""
    return from_pixels(TF.pil_to_tensor(img))


def from_pixels(pixels):
    """uint8 pixels, on any device, to floats in [-1, 1]: torchvision's to_tensor and
    normalize, operation for operation, so that translation sees what training saw."""
    return pixels.float().div(255).sub(0.5).div(0.5)


def to_pixels(images):
    """Floats in [-1, 1] to uint8 pixels, rounded as torchvision's save_image rounds."""
    return images.float().mul(0.5).add(0.5).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


def augment(img, load_size, size, generator):
    """The paper's training transform: bicubic resize to load_size x load_size, random
    size x size crop, random horizontal flip. Randomness comes from `generator` only."""
    img = TF.resize(img, [load_size, load_size], InterpolationMode.BICUBIC)
    top, left = torch.randint(0, load_size - size + 1, (2,), generator=generator).tolist()
    img = TF.crop(img, top, left, size, size)
    if torch.rand((), generator=generator).item() < 0.5:
        img = TF.hflip(img)
    return img


def load_readable(paths, index, min_size, warned):
    """paths[index] as RGB; if it has become unreadable since the start-up check, warn once
    and take the next readable file instead, so that one bad file never ends an epoch."""
    for k in range(len(paths)):
        path = paths[(index + k) % len(paths)]
        try:
            return load_rgb(path, min_size)
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

    def __init__(self, paths_A, paths_B, load_size, size):
        self.paths_A, self.paths_B = paths_A, paths_B
        self.load_size, self.size = load_size, size
        self.warned = set()

    def __len__(self):
        return max(len(self.paths_A), len(self.paths_B))

    def __getitem__(self, key):
        index_A, index_B, seed = key
        generator = torch.Generator().manual_seed(seed)
        return {"A": self._sample(self.paths_A, index_A, generator),
                "B": self._sample(self.paths_B, index_B, generator)}

    def _sample(self, paths, index, generator):
        img = load_readable(paths, index, self.load_size, self.warned)
        return to_tensor(augment(img, self.load_size, self.size, generator))


class EpochSampler(torch.utils.data.Sampler):
    """One epoch of (index_A, index_B, seed) triples, a pure function of (seed, epoch).

    An epoch has max(|A|, |B|) samples: A is visited in a shuffled order (cycling when B is
    larger), B is drawn at random for each sample, as in the authors' unaligned dataset.
    `start` skips the samples already trained on when resuming mid-epoch. The DataLoader
    iterates its sampler in the main process, so `set_epoch` reaches persistent workers.

    Under torchrun, process `rank` of `world_size` takes every world_size-th triple of the
    rest of the epoch, like torch's DistributedSampler: the processes see different pairs,
    and as many each (the last few triples are repeated to make up the count). The sequence
    does not depend on the number of processes, so a run can resume with another one.
    """

    def __init__(self, n_A, n_B, seed, *, epoch=0, start=0, rank=0, world_size=1):
        self.n_A, self.n_B, self.seed = n_A, n_B, seed
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
        rest = list(zip(order.tolist(), draws_B.tolist(), seeds.tolist()))[self.start:]
        rest += (rest * self.world_size)[:len(self) * self.world_size - len(rest)]
        return iter(rest[self.rank::self.world_size])


class ImageFiles(torch.utils.data.Dataset):
    """Images at native size for translation: (3xHxW uint8 pixels, index), or (None, index)
    with a warning for a file that cannot be read. Pixels, not floats: a quarter of the
    bytes to pass from the workers and to copy to a GPU, which normalises them itself."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return TF.pil_to_tensor(load_rgb(self.paths[i])).contiguous(), i
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            print(f"warning: skipping {self.paths[i]}: {describe(e)}", file=sys.stderr)
            return None, i
