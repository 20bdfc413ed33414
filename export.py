"""Export trained generators for use without this repository: ONNX (ONNX Runtime, TensorRT,
OpenVINO) or TorchScript (LibTorch), computing test.py's pixels.

    python export.py --weights output/horse2zebra --format onnx --output exported

writes exported/netG_A2B.onnx and exported/netG_B2A.onnx (.pt for TorchScript). Each file takes
an NCHW float32 batch in [-1, 1] (RGB, or the generator's channel count) of any batch size,
height and width, and gives the translation in [-1, 1] at the same size: test.py's padding
(edge pixels repeated up to a multiple of 4, 2**num_downs for a U-Net) and the crop back are
inside the graph. The file's metadata says so, with the network and the weights it came from;
docs/export.md has a translation with onnxruntime and Pillow alone.
"""
import json
import os
import sys
import warnings

import torch

from models import Translation
from utils import DIRECTIONS, ArgumentParser, UserError, fail, print_any_file_name
from weights import architecture, generator_states, holds_both, load_generators

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


def build_parser():
    p = ArgumentParser(description="Export trained generators as ONNX or TorchScript, with "
                       "test.py's padding inside, for use without this repository.")
    p.add_argument("--weights", required=True,
                   help="what test.py --weights takes: a training output folder (ours or the "
                   "authors' checkpoints/NAME), a generator .pth (ours, the authors' or other "
                   "implementations' in their layout) or a checkpoint.pth")
    p.add_argument("--format", choices=tuple(FORMATS), default="onnx",
                   help="onnx (torch.onnx's dynamo exporter, its default opset) or torchscript "
                   "(default: onnx)")
    p.add_argument("--output", required=True, help="folder for netG_A2B and netG_B2A files")
    p.add_argument("--direction", choices=("A2B", "B2A", "both"),
                   help="which generators (default: both where the weights hold both; a single "
                   "generator file needs A2B or B2A)")
    p.add_argument("--epoch", help="a training output folder's snapshot of epoch N, as test.py "
                   "--epoch (default: the latest weights)")
    return p


def directions(args):
    if not os.path.exists(args.weights):
        raise UserError(f"--weights {args.weights}: no such file or folder")
    if args.direction in ("A2B", "B2A"):
        return [args.direction]
    if args.direction == "both" or holds_both(args.weights, args.epoch):
        return ["A2B", "B2A"]
    raise UserError(f"{args.weights}: holds one generator; add --direction A2B or B2A")


def metadata(G, direction, args):
    """What a user of the file needs to know, as ONNX metadata_props or a TorchScript extra
    file: the contract, the network and the weights it came from."""
    path = generator_states(args.weights, [direction], args.epoch)[direction][0]
    network = architecture(G.state_dict())
    colours = "RGB" if G.in_ch == 3 else "grayscale"
    return {
        "input": f"image: float32 NCHW, {G.in_ch} channel(s) ({colours}), values in [-1, 1] "
                 "(pixel / 127.5 - 1); any batch, height and width",
        "output": f"translation: float32 NCHW, {G.out_ch} channel(s), values in [-1, 1], the "
                  "input's height and width; pixel = round((value + 1) * 127.5), clipped to "
                  "0-255",
        "padding": f"inside the graph: edge pixels repeated up to a multiple of {G.multiple} "
                   f"(at least {G.smallest}), cropped back after",
        "direction": direction, "netG": network["netG"], "ngf": str(network["ngf"]),
        "norm": network["norm"], "in_channels": str(G.in_ch), "out_channels": str(G.out_ch),
        "weights": os.path.abspath(path) + (f", epoch {args.epoch}" if args.epoch else ""),
        "exported_by": "export.py of CycleGAN in PyTorch",
    }


def export_onnx(G, path, meta):
    example = torch.rand(1, G.in_ch, 64, 64) * 2 - 1
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"),
            3: torch.export.Dim("width")}
    program = torch.onnx.export(Translation(G).eval(), (example,), dynamo=True, verbose=False,
                                input_names=["image"], output_names=["translation"],
                                dynamic_shapes={"image": dims})
    program.model.metadata_props.update(meta)
    program.save(path)


def export_torchscript(G, path, meta):
    with warnings.catch_warnings():  # torch.jit is deprecated, but LibTorch still reads it
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(Translation(G).eval())
        torch.jit.save(scripted, path, _extra_files={"metadata.json": json.dumps(meta, indent=2)})


def export(args):
    wanted = directions(args)
    nets = load_generators(args.weights, wanted, None, None, torch.device("cpu"), args.epoch)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output {args.output}: cannot write there ({e.strerror or e})")
    for direction in wanted:
        G = nets[direction][0]
        meta = metadata(G, direction, args)
        path = os.path.join(args.output, f"net{DIRECTIONS[direction].generator}"
                            f"{FORMATS[args.format]}")
        (export_onnx if args.format == "onnx" else export_torchscript)(G, path, meta)
        print(f"{path}: {direction}, {meta['input']}")


def main(argv=None):
    print_any_file_name()
    args = build_parser().parse_args(argv)
    try:
        export(args)
    except UserError as e:
        fail(f"export.py: error: {e}")
    except ImportError as e:
        fail(f"export.py: error: {e.name} is not installed; ONNX export needs "
             "`pip install onnx onnxscript` (and onnxruntime to run the file)")


if __name__ == "__main__":
    main(sys.argv[1:])
