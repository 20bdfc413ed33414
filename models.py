"""The CycleGAN networks: the paper's ResNet generator and 70x70 PatchGAN discriminator, and
the authors' other choices (U-Net generators, deeper or per-pixel discriminators, batch or no
normalisation), plus the multi-scale PatchGAN of pix2pixHD.

Layers sit in `self.model = nn.Sequential(...)` (the pixel discriminator's in `self.net`) in
the same order as the authors' PyTorch release, so `state_dict()` keys and shapes equal theirs
and their published generators (horse2zebra.pth, style_monet.pth, ...) and checkpoints load
with `strict=True`.

Activations are not in place (the authors' are): an in-place ReLU overwrites the output of
the InstanceNorm before it, which autograd then has to keep a copy of for the backward pass.
"""
import math
import re

import torch
from torch import nn

NORMS = ("instance", "batch", "none")
GENERATORS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
DISCRIMINATORS = ("basic", "n_layers", "pixel", "multiscale")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def _norm(kind, channels):
    # Instance norm without affine parameters or running statistics, as in the paper's
    # release, adds no state_dict entries; batch norm has both, as the authors' option.
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _bias(norm):
    """Whether a convolution followed by a norm layer has a bias, as in the authors' code:
    under instance norm only. Batch norm has a shift of its own; their `none` drops the bias
    too (their test for it compares the layer maker with InstanceNorm2d)."""
    return norm == "instance"


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and normalisation, plus a skip."""

    def __init__(self, dim, norm="instance"):
        super().__init__()
        bias = _bias(norm)
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), _norm(norm, dim), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), _norm(norm, dim),
        )

    def forward(self, x):
        return x + self.conv_block(x)


class Generator(nn.Module):
    """c7s1-64, d128, d256, n_blocks x R256, u128, u64, c7s1-3 with a Tanh output (the
    authors' resnet_9blocks; resnet_6blocks with n_blocks=6).

    Input height and width must be multiples of 4 (two stride-2 steps down and up).
    """
    multiple, smallest = 4, 8  # translate() pads to these

    def __init__(self, in_ch=3, out_ch=3, ngf=64, n_blocks=9, norm="instance", *,
                 init=("normal", 0.02)):
        super().__init__()
        self.in_ch, self.out_ch, self.ngf, self.norm = in_ch, out_ch, ngf, norm
        bias = _bias(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7, bias=bias), _norm(norm, ngf),
                  nn.ReLU()]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       _norm(norm, ngf * mult * 2), nn.ReLU()]
        layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       _norm(norm, ngf * mult // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self, *init)

    def forward(self, x):
        return self.model(x)


class UnetBlock(nn.Module):
    """One level of the authors' U-Net: a stride-2 convolution down, the levels inside, a
    stride-2 transposed convolution up, and the skip: the level's input is concatenated to
    its output, except at the outermost level, which gives the image."""

    def __init__(self, outer, inner, norm, inside=None, in_ch=None):
        super().__init__()
        self.outermost = in_ch is not None
        bias = _bias(norm)
        down = nn.Conv2d(in_ch or outer, inner, 4, stride=2, padding=1, bias=bias)
        if self.outermost:
            layers = [down, inside, nn.ReLU(), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1),
                      nn.Tanh()]
        elif inside is None:  # the innermost level, 1x1 at the bottom: nothing to normalise
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(),
                      nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias), _norm(norm, outer)]
        else:
            layers = [nn.LeakyReLU(0.2), down, _norm(norm, inner), inside, nn.ReLU(),
                      nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=bias),
                      _norm(norm, outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The authors' U-Net of `num_downs` levels (unet_256: 8, unet_128: 7), the innermost
    at 1x1 for a 2**num_downs input; widths ngf, 2ngf, 4ngf, then 8ngf. Without dropout, as
    their CycleGAN's default. Sides must be multiples of 2**num_downs."""

    def __init__(self, in_ch=3, out_ch=3, num_downs=8, ngf=64, norm="instance", *,
                 init=("normal", 0.02)):
        super().__init__()
        self.in_ch, self.out_ch, self.ngf, self.norm = in_ch, out_ch, ngf, norm
        self.multiple = self.smallest = 2 ** num_downs
        widths = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        block = None
        for level in reversed(range(num_downs)):
            outer = widths[level - 1] if level else out_ch
            block = UnetBlock(outer, widths[level], norm, inside=block,
                              in_ch=None if level else in_ch)
        self.model = block
        init_weights(self, *init)

    def forward(self, x):
        return self.model(x)


class Discriminator(nn.Module):
    """PatchGAN: a map of real/fake scores, one per overlapping patch. With the default
    n_layers=3 (the authors' basic) each patch is 70x70, and a 256x256 input gives a 30x30
    map; the loss compares every entry with its target."""

    def __init__(self, in_ch=3, ndf=64, n_layers=3, norm="instance", *,
                 init=("normal", 0.02)):
        super().__init__()
        layers = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=_bias(norm)),
                       _norm(norm, out), nn.LeakyReLU(0.2)]
            channels = out
        layers += [nn.Conv2d(channels, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        init_weights(self, *init)

    def forward(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """The authors' 1x1 PatchGAN: a real/fake score for every pixel, from its colour alone."""

    def __init__(self, in_ch=3, ndf=64, norm="instance", *, init=("normal", 0.02)):
        super().__init__()
        bias = _bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, ndf, 1), nn.LeakyReLU(0.2), nn.Conv2d(ndf, ndf * 2, 1, bias=bias),
            _norm(norm, ndf * 2), nn.LeakyReLU(0.2), nn.Conv2d(ndf * 2, 1, 1, bias=bias))
        init_weights(self, *init)

    def forward(self, x):
        return self.net(x)


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's discriminator: PatchGANs of the same form at full, 1/2 and 1/4 scale, the
    image shrunk by 3x3 average pooling between them; returns their maps, coarsest last.
    The coarser scales see larger patches: the whole composition, not only the texture."""

    def __init__(self, in_ch=3, ndf=64, n_layers=3, norm="instance", scales=3, *,
                 init=("normal", 0.02)):
        super().__init__()
        self.scales = nn.ModuleList(Discriminator(in_ch, ndf, n_layers, norm, init=init)
                                    for _ in range(scales))

    def forward(self, x):
        maps = []
        for i, D in enumerate(self.scales):
            if i:
                x = nn.functional.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            maps.append(D(x))
        return maps


def make_generator(netG="resnet_9blocks", *, in_ch=3, out_ch=3, ngf=64, norm="instance",
                   init_type="normal", init_gain=0.02):
    """A generator by the authors' name: resnet_<N>blocks or unet_<2**num_downs>."""
    blocks, size = re.fullmatch(r"resnet_(\d+)blocks|unet_(\d+)", netG).groups()
    init = (init_type, init_gain)
    if blocks is not None:
        return Generator(in_ch, out_ch, ngf, int(blocks), norm, init=init)
    return UnetGenerator(in_ch, out_ch, int(math.log2(int(size))), ngf, norm, init=init)


def make_discriminator(netD="basic", *, in_ch=3, ndf=64, n_layers=3, norm="instance",
                       init_type="normal", init_gain=0.02):
    """A discriminator by the authors' name (basic is n_layers with n_layers=3), or
    multiscale."""
    init = (init_type, init_gain)
    if netD == "pixel":
        return PixelDiscriminator(in_ch, ndf, norm, init=init)
    if netD == "multiscale":
        return MultiscaleDiscriminator(in_ch, ndf, n_layers, norm, init=init)
    return Discriminator(in_ch, ndf, 3 if netD == "basic" else n_layers, norm, init=init)


def crop_problem(size, netG="resnet_9blocks", netD="basic", n_layers=3):
    """Why a training crop of size x size does not fit these networks, or None. A generator
    needs sides that are multiples of its downsampling (4; 2**num_downs for a U-Net). A
    PatchGAN halves the image n_layers times, then needs 3x3 for its last two 4x4
    convolutions; the multi-scale one does so at 1/4 scale."""
    G = make_generator(netG, ngf=1)
    n_layers = 3 if netD == "basic" else n_layers
    least = {"pixel": 1, "multiscale": 4 * 3 * 2 ** n_layers}.get(netD, 3 * 2 ** n_layers)
    least = max(least, G.smallest)
    if size < least or size % G.multiple:
        return (f"must be a multiple of {G.multiple} and at least {least} (for --netG {netG} "
                f"and --netD {netD})")
    return None


def init_weights(net, init_type="normal", gain=0.02):
    """The authors' initialisations: convolution weights from N(0, gain) (the paper's
    'normal'), Xavier-normal with `gain`, Kaiming-normal (fan in) or orthogonal with `gain`;
    biases zero; batch norm scales from N(1, gain)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def count_parameters(net):
    return sum(p.numel() for p in net.parameters())


def padded_side(side: int, multiple: int, smallest: int) -> int:
    """The side a generator runs an image side at: up to a multiple of its downsampling (4 for
    the ResNet, 2**num_downs for a U-Net), and at least `smallest`, so that the reflection
    padding at 1/4 resolution has room. torch.sym_max keeps the side symbolic when exported
    with a dynamic size; TorchScript has its own max."""
    rounded = side + (-side) % multiple
    if torch.jit.is_scripting():
        return max(smallest, rounded)
    return torch.sym_max(smallest, rounded)


class Translation(nn.Module):
    """Generator G on a [-1, 1] batch of any height and width: padded (edge pixels repeated)
    to padded_side, translated, cropped back to exactly the input's size. test.py's pass, and
    the graph export.py writes."""

    def __init__(self, G):
        super().__init__()
        self.G, self.multiple, self.smallest = G, G.multiple, G.smallest

    def forward(self, image):
        h, w = image.shape[-2], image.shape[-1]
        pad_h = padded_side(h, self.multiple, self.smallest) - h
        pad_w = padded_side(w, self.multiple, self.smallest) - w
        padded = nn.functional.pad(image, [0, pad_w, 0, pad_h], mode="replicate")
        return self.G(padded)[:, :, :h, :w]


@torch.inference_mode()
def translate(G, image):
    """Run generator G on a [-1, 1] batch of any height and width (Translation); the result
    has exactly the input's size."""
    return Translation(G)(image)


def cyclegan_networks(*, input_nc=3, output_nc=3, ngf=64, ndf=64, netG="resnet_9blocks",
                      netD="basic", n_layers_D=3, norm="instance", init_type="normal",
                      init_gain=0.02):
    """G_A2B, G_B2A, D_A, D_B, made in this order: the generators between the input_nc-channel
    images of domain A and the output_nc-channel ones of domain B, and the discriminators
    judging each domain, as the authors' options describe them."""
    init = {"norm": norm, "init_type": init_type, "init_gain": init_gain}
    G_A2B = make_generator(netG, in_ch=input_nc, out_ch=output_nc, ngf=ngf, **init)
    G_B2A = make_generator(netG, in_ch=output_nc, out_ch=input_nc, ngf=ngf, **init)
    D_A, D_B = (make_discriminator(netD, in_ch=channels, ndf=ndf, n_layers=n_layers_D, **init)
                for channels in (input_nc, output_nc))
    return G_A2B, G_B2A, D_A, D_B
