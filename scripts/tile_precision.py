"""How far the tiled pass is from the whole-image pass, in fp32 and under bf16 autocast, next to
how far bf16 is from fp32: on the CPU, with a generator file (else a random ngf 64, 9-block
one) and a photo (else random pixels), resized to --size.

    python scripts/tile_precision.py --weights G.pth --image horse.jpg --size 1024x768 --tile 128

Prints one line per comparison: the largest and mean difference on the generator's [-1, 1]
scale, and in grey levels of the PNG (0-255): the largest, and the share of values off by at
least 1 and by more than 1.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
import tiles  # noqa: E402
from datasets import load_image, to_pixels, to_tensor  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="a generator .pth (default: random, ngf 64, 9 blocks)")
    p.add_argument("--image", help="a photo (default: random pixels)")
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default: 640x480)")
    p.add_argument("--tile", type=int, default=128, help="tile side (default: 128)")
    return p.parse_args(argv)


def generator(path):
    torch.manual_seed(0)
    if path is None:
        return models.Generator().eval()
    state = torch.load(path, map_location="cpu", weights_only=True)
    ngf, n_blocks = state["model.1.weight"].shape[0], sum(k.endswith("conv_block.1.weight")
                                                          for k in state)
    G = models.Generator(ngf=ngf, n_blocks=n_blocks).eval()
    G.load_state_dict(state)
    return G


def photo(path, width, height):
    if path is None:
        return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return to_tensor(load_image(path).resize((width, height)))[None]


def both_passes(G, image, tile):
    return {"whole": models.translate(G, image).float(),
            "tiled": tiles.translate_tiled(G, image, tile).float()}


def compare(name, a, b):
    diff, grey = (a - b).abs(), (to_pixels(a).int() - to_pixels(b).int()).abs()
    print(f"{name}: largest {diff.max():.2e}, mean {diff.mean():.2e}; grey levels: largest "
          f"{grey.max()}, off by 1 or more {(grey >= 1).float().mean():.2%}, by more than 1 "
          f"{(grey > 1).float().mean():.2%}")


def main(argv=None):
    args = parse_args(argv)
    width, height = map(int, args.size.split("x"))
    G, image = generator(args.weights), photo(args.image, width, height)
    fp32 = both_passes(G, image, args.tile)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = both_passes(G, image, args.tile)
    print(f"{width}x{height}, tile {args.tile}, torch {torch.__version__}")
    compare("fp32: tiled against whole", fp32["tiled"], fp32["whole"])
    compare("bf16: tiled against whole", bf16["tiled"], bf16["whole"])
    compare("whole: bf16 against fp32", bf16["whole"], fp32["whole"])


if __name__ == "__main__":
    main()
