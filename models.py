"""The CycleGAN networks: the ResNet generator and the 70x70 PatchGAN discriminator.

Layers sit in `self.model = nn.Sequential(...)` in the same order as the authors' PyTorch
release, so `state_dict()` keys and shapes equal theirs and their published generators
(horse2zebra.pth, style_monet.pth, ...) load with `strict=True`.

Activations are not in place (the authors' are): an in-place ReLU overwrites the output of
the InstanceNorm before it, which autograd then has to keep a copy of for the backward pass.
"""
import torch
from torch import nn


def _norm(channels):
    # Instance norm without affine parameters or running statistics, as in the paper's
    # release; it therefore adds no state_dict entries, and every conv keeps its bias.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and instance norm, plus a skip."""

    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim),
        )

    def forward(self, x):
        return x + self.conv_block(x)


class Generator(nn.Module):
    """c7s1-64, d128, d256, n_blocks x R256, u128, u64, c7s1-3 with a Tanh output.

    Input height and width must be multiples of 4 (two stride-2 steps down and up).
    """

    def __init__(self, in_ch=3, out_ch=3, ngf=64, n_blocks=9):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), _norm(ngf), nn.ReLU()]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                       _norm(ngf * mult * 2), nn.ReLU()]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       _norm(ngf * mult // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x):
        return self.model(x)


class Discriminator(nn.Module):
    """70x70 PatchGAN: a map of real/fake scores, one per overlapping 70x70 patch.

    A 256x256 input gives a 30x30 map; LSGAN compares every entry with its target.
    """

    def __init__(self, in_ch=3, ndf=64, n_layers=3):
        super().__init__()
        layers = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1), _norm(out),
                       nn.LeakyReLU(0.2)]
            channels = out
        layers += [nn.Conv2d(channels, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x):
        return self.model(x)


def init_weights(net, std=0.02):
    """Conv weights from N(0, std), biases zero: the paper's 'normal' initialisation."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


def count_parameters(net):
    return sum(p.numel() for p in net.parameters())


@torch.inference_mode()
def translate(G, image):
    """Run generator G on a [-1, 1] batch of any height and width.

    The input is padded (edge pixels repeated) up to a multiple of 4, and to at least 8 so
    that the reflection padding at 1/4 resolution has room, then the output is cropped
    back: the result has exactly the input's size.
    """
    h, w = image.shape[-2:]
    pad_h, pad_w = max(8, h + -h % 4) - h, max(8, w + -w % 4) - w
    padded = nn.functional.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
    return G(padded)[..., :h, :w]
