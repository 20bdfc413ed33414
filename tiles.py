"""Translate images of any size in bounded memory, with the same pixels as the whole-image pass.

A batch runs whole where it fits, else in the largest sub-batches that fit; only an image that
does not fit alone runs in tiles.

Tiles cannot simply be translated one by one: InstanceNorm normalises every channel with the
mean and variance of the whole image, so independent tiles come out with other colours and
seams. Here the generator runs segment by segment instead, a segment ending at each
InstanceNorm. Within a segment the convolutions run on overlapping tiles, each read with the
halo its receptive field needs and padded as the layer pads only where it crosses the image's
true border, and the moments of the segment's output are summed over all tiles (in float64)
before any tile is normalised. Between segments the activations wait off the device, in host
memory or in a temporary memory-mapped file; the full-resolution ones, the largest (64
channels at every pixel), are recomputed from their cheaper inputs instead of being stored.
"""
import math
import os
import tempfile

import numpy as np
import torch
from torch import nn

import models

# Peak memory of the whole-image pass (models.translate) on the CPU, measured as the peak RSS
# of a fresh process (torch 2.15, one thread) for Generator(ngf=64, n_blocks=9): 0.88, 1.54 and
# 4.30 GB at 0.25, 1 and 4 megapixels, so 880-920 bytes per pixel above about 0.6 GB of torch
# and weights: under 15 bytes per pixel per ngf (the largest step holds about three 64-channel
# full-resolution maps at once).
WHOLE_BYTES_PER_PIXEL_PER_NGF = 15
# Working memory of the tiled pass per pixel of a full-resolution tile, per ngf: at 4 MP
# with ngf 64, tiles of 1024 took 0.57 GB more peak RSS than tiles of 512 (725 bytes/pixel).
TILE_BYTES_PER_PIXEL_PER_NGF = 12
# On one CPU thread at 1 MP, tiles of 256 and 512 ran as fast as the whole-image pass or
# faster (they stay in cache), 1024 no faster; a GPU needs larger ones to keep busy.
MIN_TILE, MAX_TILE_CPU, MAX_TILE_GPU = 64, 512, 2048
# The whole-image pass runs only where it needs at most this share of the budget: beyond, the
# tiled pass costs 7-10% more time (docs/benchmarks.md) and leaves the machine most of its
# memory (a 12 MP photo: 3.5 GB of peak memory instead of 11.8).
WHOLE_PASS_SHARE = 0.25
# GPU kernels index with 32-bit integers, and some (CUDA's reflection padding among them) refuse
# tensors of more elements than this; CPU kernels index with 64 bits.
MAX_ELEMENTS = 2**31 - 1


def padded_size(h, w, multiple=4, smallest=8):
    """The size models.translate runs the generator at: a multiple of 4, at least 8, for the
    ResNet (a U-Net's G.multiple and G.smallest are larger)."""
    return max(smallest, h + -h % multiple), max(smallest, w + -w % multiple)


def whole_pass_bytes(G, h, w):
    """Estimated peak memory (bytes) of models.translate on one h x w image, beyond torch's own."""
    size = padded_size(h, w, G.multiple, G.smallest)
    return WHOLE_BYTES_PER_PIXEL_PER_NGF * G.ngf * math.prod(size)


def largest_activation(G, h, w):
    """Elements of the largest tensor the generator makes of one h x w image (or tile): its
    ngf-channel map at full resolution, reflection-padded for the last convolution."""
    pad = G.model[0].padding[0] if tileable(G) else 0
    return G.ngf * math.prod(side + 2 * pad for side in padded_size(h, w, G.multiple, G.smallest))


def tileable(G):
    """Whether the tiled pass can run G: the ResNet generator with InstanceNorm."""
    return isinstance(G, models.Generator) and G.norm == "instance"


def whole_batch_size(G, h, w, budget, device):
    """How many h x w images may run whole together: within WHOLE_PASS_SHARE of the budget and,
    off the CPU, with no tensor over MAX_ELEMENTS. 0 means that one image alone does not fit."""
    n = int(budget * WHOLE_PASS_SHARE // whole_pass_bytes(G, h, w))
    if torch.device(device).type != "cpu":
        n = min(n, MAX_ELEMENTS // largest_activation(G, h, w))
    return n


def tiled_host_bytes(G, h, w, storage_dtype=torch.float32):
    """Host memory (bytes) the activations of the tiled pass wait in between segments.

    At any time at most three 4*ngf-channel maps at 1/4 resolution (in a residual block: its
    input, and its two convolutions' outputs) or one of them and a 2*ngf-channel map at 1/2
    resolution are kept: 3/4 * ngf values per pixel of the padded image.
    """
    ngf, pixels = G.model[1].out_channels, math.prod(padded_size(h, w))
    storage = torch.empty((), dtype=storage_dtype).element_size()
    return 3 * ngf * pixels * storage // 4 + 2 * 3 * pixels * 4


def available_memory(device):
    """Bytes free now on `device`: free GPU memory plus what torch's cache holds unused, or
    the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return host_available_memory()


def host_available_memory():
    """Available RAM in bytes: Linux's MemAvailable (free plus reclaimable cache), else free
    pages (POSIX), else a conservative 4 GiB where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def memory_budget(device):
    """What a translation may use on `device`: three quarters of what is available, leaving
    room for the rest of the process and for the estimates' error."""
    return available_memory(device) * 3 // 4


def choose_tile(G, budget_bytes, device="cpu"):
    """The largest tile side (a multiple of 4, from MIN_TILE up to the device's maximum) whose
    working memory fits the budget; larger tiles repeat less of their halo. Off the CPU, no
    tensor of a tile (largest_activation of the tile) may exceed MAX_ELEMENTS either."""
    ngf = G.model[1].out_channels
    side = int(math.sqrt(max(budget_bytes, 0) / (TILE_BYTES_PER_PIXEL_PER_NGF * ngf)))
    largest = MAX_TILE_CPU
    if torch.device(device).type != "cpu":
        pad = G.model[0].padding[0]
        largest = min(MAX_TILE_GPU, math.isqrt(MAX_ELEMENTS // ngf) - 2 * pad)
    return min(largest - largest % 4, max(MIN_TILE, side - side % 4))


def translate_within(G, image, budget_bytes=None, progress=None):
    """models.translate(G, image) within a memory budget; returns (output, tiled).

    Images run whole, as many together as whole_batch_size allows within the budget (by
    default memory_budget of G's device), a batch split into sub-batches where it must be.
    An image that does not fit alone runs in tiles (whole, one at a time, where G is not
    tileable), with a tile and a storage place chosen to fit the budget: on the CPU host
    memory shares the budget with the tiles, and activations that do not fit go to a
    temporary file. `progress(done, total)`, if given,
    is called as tiles complete.
    """
    device = next(G.parameters()).device
    budget = memory_budget(device) if budget_bytes is None else budget_bytes
    _, _, h, w = image.shape
    together = whole_batch_size(G, h, w, budget, device) or int(not tileable(G))
    if together:
        output = torch.cat([models.translate(G, part) for part in image.split(together)])
        if progress is not None:
            progress(1, 1)
        return output, False
    host = tiled_host_bytes(G, h, w)
    if device.type == "cpu":
        spill = host > budget * 3 // 4
        tile = choose_tile(G, budget if spill else budget - host)
    else:
        spill = host > memory_budget("cpu")
        tile = choose_tile(G, budget, device)
    return translate_tiled(G, image, tile, spill=spill, progress=progress), True


@torch.inference_mode()
def translate_tiled(G, image, tile=512, storage_dtype=torch.float32, spill=False, progress=None):
    """models.translate(G, image) computed in tiles of tile x tile pixels (a multiple of 4).

    Activations between segments are kept on the host in `storage_dtype`, in temporary
    memory-mapped files if `spill`. The output is on the image's device, in G's dtype.
    `progress(done, total)` is called after each tile of each segment, over the whole batch.
    """
    if tile % 4 or tile < 4:
        raise ValueError(f"tile must be a positive multiple of 4, not {tile}")
    param = next(G.parameters())
    n, _, h, w = image.shape
    output = torch.empty((n, G.model[-2].out_channels, h, w), dtype=param.dtype)
    counter = _Progress(progress, n * _tiles_per_image(G, h, w, tile))
    for i in range(n):
        run = _Run(param.device, param.dtype, tile, _Host(storage_dtype, spill), counter)
        run.translate(G, image[i:i + 1], output[i:i + 1])
    return output.to(image.device)


def _tiles_per_image(G, h, w, tile):
    # The grid has as many tiles at 1/2 and 1/4 resolution (tile/2, tile/4) as at full size.
    segments = sum(isinstance(m, nn.InstanceNorm2d) for m in G.modules())
    grid = math.prod(math.ceil(s / tile) for s in padded_size(h, w))
    return segments * grid + math.ceil(h / tile) * math.ceil(w / tile)


class _Progress:
    def __init__(self, callback, total):
        self.callback, self.done, self.total = callback, 0, total

    def step(self):
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


class _Host:
    """Where activations wait between segments: RAM, or unlinked temporary files, mapped."""

    def __init__(self, dtype, spill):
        self.dtype, self.spill = dtype, spill

    def empty(self, shape):
        if not self.spill:
            return torch.empty(shape, dtype=self.dtype)
        np_dtype = {torch.float32: np.float32, torch.float16: np.float16}[self.dtype]
        with tempfile.TemporaryFile() as f:
            mapped = np.memmap(f, dtype=np_dtype, mode="w+", shape=tuple(shape))
        return torch.from_numpy(mapped)


class _Run:
    """One image through the generator, segment by segment."""

    def __init__(self, device, dtype, tile, host, progress):
        self.device, self.dtype, self.tile, self.host = device, dtype, tile, host
        self.progress = progress

    def translate(self, G, image, output):
        h, w = image.shape[-2:]
        ph, pw = padded_size(h, w)
        # The same edge replication as models.translate, so that borders match.
        padded = nn.functional.pad(image.cpu(), (0, pw - w, 0, ph - h), mode="replicate")
        self.size = (ph, pw)
        result = self.run(G.model, _Stored(padded, self))
        self.fill(result, output[0])

    def run(self, layers, source):
        """The lazy map that `layers` make of `source`, running each InstanceNorm's pass."""
        pad = None
        for layer in layers:
            if isinstance(layer, nn.ReflectionPad2d):
                pad = layer.padding[0]
            elif isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                source, pad = _Conv(layer, source, pad), None
            elif isinstance(layer, nn.InstanceNorm2d):
                source = self.normalise(source, layer.eps)
            elif isinstance(layer, (nn.ReLU, nn.Tanh)):
                source = _Map(source, layer)
            elif isinstance(layer, models.ResnetBlock):
                source = self.residual(source, layer.conv_block)
            else:
                raise TypeError(f"tiles: no tiled form of {type(layer).__name__}")
        return source

    def normalise(self, source, eps):
        """Sum the moments of `source` over all tiles, then read it back normalised.

        Full-resolution maps are recomputed on every read rather than stored: they are the
        largest, and the convolutions making them are cheap next to the rest.
        """
        keep = source.size != self.size
        stored = self.host.empty((1, source.channels, *source.size)) if keep else None
        moments = _Moments()
        for region in self.tiles(source.size):
            values = source(*region)
            moments.add(values)
            if keep:
                _slice(stored, region)[...] = values
            self.progress.step()
        norm = moments.norm(eps, self.dtype)
        return _Map(_Stored(stored, self) if keep else source, norm)

    def residual(self, source, block):
        """x + block(x), with x stored and the sum written over it."""
        x = self.in_place(source)
        branch = self.run(block, x)
        for region in self.tiles(x.size):
            _slice(x.values, region)[...] = x(*region) + branch(*region)
        return x

    def in_place(self, source):
        """An elementwise map of a stored activation, applied to the stored values in place."""
        stored = source.stored()
        if stored is source:
            return stored
        for region in self.tiles(source.size):
            _slice(stored.values, region)[...] = source(*region)
        return stored

    def fill(self, source, output):
        for region in self.tiles(output.shape[-2:], scale=1):
            _slice(output, region)[...] = source(*region)
            self.progress.step()

    def tiles(self, size, scale=None):
        """The grid over a map of `size`: tiles of the same share of the image at every
        resolution (tile/2 at 1/2, tile/4 at 1/4), so every pass has as many."""
        side = self.tile // (scale or self.size[0] // size[0])
        for y in range(0, size[0], side):
            for x in range(0, size[1], side):
                yield y, min(y + side, size[0]), x, min(x + side, size[1])


def _slice(t, region):
    y0, y1, x0, x1 = region
    return t[..., y0:y1, x0:x1]


class _Stored:
    """An activation in host memory, read onto the compute device region by region."""

    def __init__(self, values, run):
        self.values, self.run = values, run
        self.channels, self.size = values.shape[1], tuple(values.shape[-2:])

    def __call__(self, y0, y1, x0, x1):
        region = self.values[..., y0:y1, x0:x1]
        return region.to(device=self.run.device, dtype=self.run.dtype)

    def stored(self):
        return self


class _Map:
    """An elementwise function (a norm, an activation) of another map."""

    def __init__(self, source, fn):
        self.source, self.fn = source, fn
        self.channels, self.size = source.channels, source.size

    def __call__(self, y0, y1, x0, x1):
        return self.fn(self.source(y0, y1, x0, x1))

    def stored(self):
        return self.source.stored()


class _Norm:
    """x -> (x - mean) / sqrt(var + eps), computed in fp32 at least, as InstanceNorm does."""

    def __init__(self, mean, invstd, dtype):
        # As x * invstd + shift: one pass over the tile instead of two.
        self.shift, self.invstd, self.dtype = -mean * invstd, invstd, dtype

    def __call__(self, x):
        precise = torch.promote_types(x.dtype, torch.float32)
        return torch.addcmul(self.shift, x.to(precise), self.invstd).to(self.dtype)


class _Moments:
    """Per-channel mean and sum of squared deviations over all tiles of a map, in float64.

    Each tile's own mean and variance (one pass, without copies) are merged into the running
    ones by Chan et al.'s pairwise rule, which loses no precision when a channel's mean is
    large next to its spread, as E[x^2] - E[x]^2 would.
    """

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        var, mean = torch.var_mean(x, (0, 2, 3), correction=0)
        n = x.shape[0] * x.shape[2] * x.shape[3]
        var, mean = var.double(), mean.double()
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + var * n + delta.square() * (self.count * n / total)
        self.count = total

    def norm(self, eps, dtype):
        # InstanceNorm's variance is the biased one (divided by the count).
        invstd = (self.m2 / self.count + eps).rsqrt()
        precise, shape = torch.promote_types(dtype, torch.float32), (1, -1, 1, 1)
        return _Norm(self.mean.to(precise).view(shape), invstd.to(precise).view(shape), dtype)


class _Conv:
    """A convolution computed on any region of its output: it reads the input region the
    region needs (halo included) and pads it as the layer pads, but only where that region
    crosses the border of the whole map."""

    def __init__(self, conv, source, reflect):
        self.conv, self.source, self.channels = conv, source, conv.out_channels
        self.k, self.s = conv.kernel_size[0], conv.stride[0]
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        # Reflection comes from a ReflectionPad2d before the layer, zeros from its own padding.
        self.mode = "constant" if reflect is None else "reflect"
        self.p = conv.padding[0] if reflect is None else reflect
        if self.transposed:
            extra = conv.output_padding[0]
            self.size = tuple((n - 1) * self.s - 2 * self.p + self.k + extra for n in source.size)
        else:
            self.size = tuple((n + 2 * self.p - self.k) // self.s + 1 for n in source.size)

    def __call__(self, y0, y1, x0, x1):
        if self.transposed:
            return self.transposed_region(y0, y1, x0, x1)
        k, s, p = self.k, self.s, self.p
        rows, cols = (y0 * s - p, (y1 - 1) * s - p + k), (x0 * s - p, (x1 - 1) * s - p + k)
        x = self.read(rows, cols)
        return nn.functional.conv2d(x, self.conv.weight, self.conv.bias, stride=s)

    def read(self, rows, cols):
        """source over rows x cols ([start, end) each), padded where they leave the map."""
        (h, w), (r0, r1), (c0, c1) = self.source.size, rows, cols
        inside = (max(r0, 0), min(r1, h), max(c0, 0), min(c1, w))
        x = self.source(*inside)
        pads = (inside[2] - c0, c1 - inside[3], inside[0] - r0, r1 - inside[1])
        return nn.functional.pad(x, pads, mode=self.mode) if any(pads) else x

    def transposed_region(self, y0, y1, x0, x1):
        # Output o gathers inputs i with o = s*i - p + j, 0 <= j < k. The inputs of the
        # region, computed without padding, give outputs from s*i0 - p on; inputs outside
        # the map contribute nothing, as in the layer itself.
        k, s, p = self.k, self.s, self.p
        spans = []
        for o0, o1, n in ((y0, y1, self.source.size[0]), (x0, x1, self.source.size[1])):
            i0, i1 = max(0, -((k - 1 - o0 - p) // s)), min(n, (o1 - 1 + p) // s + 1)
            spans.append((i0, i1, o0 + p - s * i0, o1 + p - s * i0))
        (a0, a1, ya, yb), (b0, b1, xa, xb) = spans
        x = self.source(a0, a1, b0, b1)
        out = nn.functional.conv_transpose2d(x, self.conv.weight, self.conv.bias, stride=s)
        return out[..., ya:yb, xa:xb]
