"""Train CycleGAN (Zhu et al. 2017) on two unaligned image folders.

    python train.py --dataroot datasets/horse2zebra

Read top to bottom: the options; saving and resuming; what a run records (losses.csv,
samples, visdom, FID); the training loop, with what is due at each iteration written out in
`train_epoch`; `main`. The model and its optimisation step are in cyclegan.py. Checkpoints
resume exactly (`--resume`).

Epochs count from 0 inside this file (`Position.epoch`); only what a person reads (the
progress bar, messages, the epoch columns of losses.csv and metrics.csv) counts from 1.
"""
import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time

import torch
from torch import distributed as dist
from tqdm import tqdm

from cyclegan import GAN_MODES, LOSS_NAMES, CycleGAN
from dashboard import Dashboard, ensure_server
from datasets import (CROPPING, PREPROCESS, EpochSampler, UnalignedDataset, domain_dir,
                      fetch_dataset, list_images)
from fid import inception_network
from models import DISCRIMINATORS, GENERATORS, INIT_TYPES, NORMS, crop_problem
from utils import (LR_POLICIES, VISUAL_NAMES, ArgumentParser, LossLog, RunFailure, StopSignals,
                   UserError, add_amp_argument, add_compile_argument, add_device_argument,
                   add_workers_argument, atomic_save, atomic_write_text, budget_lr_factor,
                   claimed, cpu_bf16, default_load_size, default_output, describe,
                   eager_where_compiling_fails, fail, ignore_stop_signals, load_weights,
                   lr_factor, native_bf16, on_cpu, parse_duration, pick_device, precision_name,
                   print_any_file_name, report_skipped, require, run_sibling, save_visuals,
                   set_fp32_precision, use_amp, use_compile, visuals_grid)
from weights import existing, network_files

ARCHITECTURE = ("input_nc", "output_nc", "netG", "n_blocks", "ngf", "netD", "ndf", "n_layers_D",
                "norm")
# A checkpoint holds these, and where the epoch under way stands: "pairs" ("position" in
# checkpoints written before December 2026).
CHECKPOINT_KEYS = {"model", "epoch", "iteration", "seconds", "options", "rng"}
# Reading a loss makes the host wait for the GPU, so losses are read only every READ_EVERY
# iterations (for the progress bar and the finiteness check) and at each --log_every.
READ_EVERY = 10
LOSS_FIELDS = ("iteration", "epoch", *LOSS_NAMES, "lr", "seconds")
METRIC_FIELDS = ("iteration", "epoch", "mean_fid", "fid_A2B", "kid_A2B", "kid_std_A2B", "fid_B2A",
                 "kid_B2A", "kid_std_B2A")
# Waiting for data for less of the time than this is not worth the progress bar's room.
DATA_SHARE_SHOWN = 0.1
# The time left but not the time elapsed (losses.csv has it), so that at 80 columns the bar
# keeps about ten characters beside the counts, the time left, the speed and two losses.
BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
              "[{remaining} left, {rate_fmt}{postfix}]")


# The options

def build_parser():
    p = ArgumentParser(description="Train CycleGAN on unaligned image folders "
                       "(DIR/trainA + DIR/trainB, or DIR/train/A + DIR/train/B).")
    _add_data_options(p)
    _add_schedule_options(p)
    _add_optimiser_and_loss_options(p)
    _add_network_and_speed_options(p)
    _add_run_options(p)
    return p


def _add_data_options(p):
    p.add_argument("--dataroot", required=True,
                   help="dataset folder with trainA/ and trainB/ (or train/A, train/B); one "
                   "of the authors' datasets, e.g. datasets/horse2zebra, is downloaded there "
                   "first if missing (bash datasets/download.sh --help lists them)")
    p.add_argument("--output", help="where weights, checkpoint, losses.csv and samples go "
                   "(default: output/<dataroot name>)")
    p.add_argument("--phase", default="train",
                   help="the split to train on: PHASEA/ and PHASEB/ (default: train)")
    p.add_argument("--max_dataset_size", type=int,
                   help="train on the first N images of each domain, by name (default: all)")
    p.add_argument("--serial_batches", action="store_true",
                   help="as the authors' option: A images in order, each with the B image of the "
                   "same position (cycling), instead of shuffled A and random B")
    p.add_argument("--size", "--crop_size", type=int, default=256, dest="size",
                   help="training crop size, a multiple of 4; --crop_size is the authors' name "
                   "(default: 256)")
    p.add_argument("--load_size", type=int, help="images are resized to this before cropping "
                   "(default: size*286/256, i.e. 286 for 256)")
    p.add_argument("--preprocess", choices=PREPROCESS, default=PREPROCESS[0],
                   help="as the authors' option: resize_and_crop resizes to load_size x "
                   "load_size, then crops (the paper's); crop crops the image as it is; "
                   "scale_width resizes to load_size wide, keeping the aspect ratio; "
                   "scale_width_and_crop does that, then crops; none keeps the image as it is "
                   "(sizes rounded to multiples of 4). scale_width and none give images of "
                   "their own sizes, so --batch_size 1 (default: resize_and_crop)")
    p.add_argument("--no_flip", action="store_true", help="no random horizontal flips, for data "
                   "that must not be mirrored (text, traffic on one side, left and right anatomy)")
    p.add_argument("--input_nc", type=int, choices=(1, 3), default=3,
                   help="channels of domain A's images, as the authors' option: 1 reads them as "
                   "grayscale (16-bit ones keep their precision), 3 as RGB (default: 3)")
    p.add_argument("--output_nc", type=int, choices=(1, 3), default=3,
                   help="channels of domain B's images, as --input_nc (default: 3)")


def _add_schedule_options(p):
    p.add_argument("--n_epochs", type=int, default=100,
                   help="epochs at the full learning rate, as the authors' option (default: 100)")
    p.add_argument("--n_epochs_decay", type=int, default=100,
                   help="epochs after those, with the rate falling linearly towards zero, as the "
                   "authors' option; the run is --n_epochs + --n_epochs_decay epochs (default: "
                   "100)")
    # An option of this repository's before it took the authors' names: refused, saying how.
    p.add_argument("--decay_epoch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--lr_policy", choices=LR_POLICIES, default="linear",
                   help="the learning-rate schedule, epoch by epoch, as the authors' option: "
                   "linear (constant for --n_epochs, then towards zero over --n_epochs_decay), "
                   "step (x0.1 every --lr_decay_iters epochs), plateau (as their CycleGAN, whose "
                   "plateau sees no metric: x0.2 after 7 epochs, then every 6), cosine (a "
                   "half cosine to zero over --n_epochs, rising again after) (default: linear)")
    p.add_argument("--lr_decay_iters", type=int, default=50,
                   help="with --lr_policy step: epochs between the steps (default: 50)")
    p.add_argument("--time_budget", type=parse_duration, metavar="DURATION",
                   help="train for this long (1h, 90m, 1h30m, 45s), compiling and evaluations "
                   "included, instead of --n_epochs and --n_epochs_decay: the rate stays at --lr "
                   "for the first half and falls linearly to zero at the end, whatever number "
                   "of epochs fits; the run ends at the budget with its checkpoint, and --resume "
                   "goes on within it. The clock decides the rate and the end, so such runs are "
                   "not bit-reproducible")


def _add_optimiser_and_loss_options(p):
    p.add_argument("--batch_size", type=int, default=1,
                   help="images per domain per step (default: 1, as in the paper)")
    p.add_argument("--lr", type=float, default=2e-4,
                   help="Adam learning rate (default: 2e-4)")
    p.add_argument("--beta1", type=float, default=0.5,
                   help="Adam's first beta, as the authors' option; the second is 0.999 "
                   "(default: 0.5)")
    p.add_argument("--lambda_cycle", type=float, default=10.0,
                   help="weight of the cycle-consistency loss (default: 10)")
    p.add_argument("--lambda_A", type=float, help="the authors' weight of the A->B->A cycle (and "
                   "of the identity loss on A) alone (default: --lambda_cycle)")
    p.add_argument("--lambda_B", type=float, help="the authors' weight of the B->A->B cycle (and "
                   "of the identity loss on B) alone (default: --lambda_cycle)")
    p.add_argument("--lambda_identity", type=float, default=0.5,
                   help="weight of the identity loss, relative to --lambda_cycle; 0 turns it off "
                   "(default: 0.5)")
    p.add_argument("--pool_size", type=int, default=50,
                   help="generated images kept per domain in the discriminators' replay buffer; "
                   "0 turns it off (default: 50)")
    p.add_argument("--gan_mode", choices=GAN_MODES, default="lsgan",
                   help="the GAN objective, as the authors' option: lsgan (least squares, the "
                   "paper's), vanilla (cross-entropy), wgangp (the Wasserstein critic's score, "
                   "without a gradient penalty, as in their CycleGAN) (default: lsgan)")


def _add_network_and_speed_options(p):
    p.add_argument("--ngf", type=int, default=64,
                   help="generator filters in the first conv layer (default: 64)")
    p.add_argument("--ndf", type=int, default=64,
                   help="discriminator filters in the first conv layer (default: 64)")
    p.add_argument("--netG", choices=GENERATORS,
                   help="the generators, as the authors' option: the ResNet with 9 or 6 residual "
                   "blocks, or a U-Net of 8 or 7 levels, which needs crops of a multiple of 256 "
                   "or 128 (default: resnet_9blocks)")
    p.add_argument("--n_blocks", type=int,
                   help="residual blocks in each ResNet generator; --netG resnet_6blocks is "
                   "--n_blocks 6 (default: 9)")
    p.add_argument("--netD", choices=DISCRIMINATORS, default="basic",
                   help="the discriminators, as the authors' option: basic (the 70x70 PatchGAN), "
                   "n_layers (a PatchGAN of --n_layers_D layers), pixel (1x1 patches), or "
                   "multiscale (pix2pixHD's: the PatchGAN at full, 1/2 and 1/4 scale, losses "
                   "averaged; for coarse outputs) (default: basic)")
    p.add_argument("--n_layers_D", type=int, default=3,
                   help="with --netD n_layers or multiscale: the PatchGAN's stride-2 layers; "
                   "each doubles the patch size (default: 3)")
    p.add_argument("--norm", choices=NORMS, default="instance",
                   help="normalisation in all four networks, as the authors' option (default: "
                   "instance)")
    p.add_argument("--init_type", choices=INIT_TYPES, default="normal",
                   help="initial weights, as the authors' option (default: normal)")
    p.add_argument("--init_gain", type=float, default=0.02,
                   help="scale of the normal, xavier and orthogonal initial weights (default: "
                   "0.02)")
    add_device_argument(p)
    add_amp_argument(p)
    p.add_argument("--channels_last", action="store_true",
                   help="channels-last memory format for networks and batches. torch's "
                   "InstanceNorm copies it back to NCHW at every call, and the next convolution "
                   "copies again: 460 layout copies per training step of the paper's networks, "
                   "against 22 without, and 28%% slower on a CPU; on a GPU, "
                   "scripts/gpu_check.sh times it")
    add_compile_argument(p)


def _add_continue_options(p):
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its checkpoint.pth; options not given "
                   "again are taken from it")
    p.add_argument("--continue_train", action="store_true",
                   help="as the authors' option: go on training from the four networks in "
                   "--output, their checkpoints/NAME (EPOCH_net_G_A.pth, ...) or train.py's "
                   "(netG_A2B.pth, ...), with fresh optimisers and replay buffers; a run with a "
                   "checkpoint.pth continues exactly with --resume instead")
    p.add_argument("--epoch", default="latest",
                   help="with --continue_train: the authors' saved epoch to load (default: latest)")
    p.add_argument("--epoch_count", type=int, default=1,
                   help="with --continue_train: the epoch it starts at, counting from 1, for the "
                   "learning-rate schedule, as the authors' option (default: 1)")


def _add_run_options(p):
    add_workers_argument(p, "data-loading")
    p.add_argument("--seed", type=int, default=0, help="seed for initial weights, data order, "
                   "crops and the buffers (default: 0)")
    _add_continue_options(p)
    p.add_argument("--log_every", type=int, default=100,
                   help="iterations between rows of losses.csv and visdom plot points "
                   "(default: 100)")
    p.add_argument("--sample_every", type=int, default=500,
                   help="iterations between sample grids in samples/ and on visdom (default: 500)")
    p.add_argument("--save_every", type=int, default=5000,
                   help="iterations between checkpoints, besides the one at every epoch end "
                   "(default: 5000)")
    p.add_argument("--save_epoch_freq", type=int, default=5,
                   help="epochs between snapshots of the generators, N_netG_A2B.pth and "
                   "N_netG_B2A.pth beside the latest, for test.py --epoch N, as the authors' "
                   "option; 0 keeps none (default: 5)")
    p.add_argument("--eval_every", type=int, default=0,
                   help="epochs between FID/KID evaluations on the test split (evaluate.py; "
                   "metrics.csv, visdom, and best/ keeps the weights with the lowest mean FID); "
                   "0 turns it off (default: 0)")
    p.add_argument("--inception", help="a local copy of pytorch-fid's Inception weights, or the "
                   "TorchScript default_1.pt, for --eval_every on machines without internet, as "
                   "evaluate.py --inception (default: downloaded once)")
    p.add_argument("--eval_dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                   help="Inception features for --eval_every, as evaluate.py --dims: 2048 compares "
                   "with published figures; fewer are faster on a CPU, where FID's matrix square "
                   "root of 2048x2048 takes seconds (default: 2048)")
    p.add_argument("--no_visdom", action="store_true",
                   help="do not send plots and images to visdom")
    p.add_argument("--visdom_server", default="http://localhost",
                   help="visdom server address, without the port (default: http://localhost)")
    p.add_argument("--visdom_port", type=int, default=8097,
                   help="visdom server port; on this machine, train.py starts a visdom server "
                   "there when nothing answers, and leaves it running (default: 8097)")


def read_checkpoint(path):
    if not os.path.isfile(path):
        raise UserError(f"--resume: no checkpoint at {path}; start without --resume or point "
                        "--output at the run")
    try:
        checkpoint = load_weights(path)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise UserError(f"--resume: {path} is not a checkpoint torch can read safely "
                        f"({type(e).__name__})")
    if (not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys()
            or not {"pairs", "position"} & checkpoint.keys()):
        raise UserError(f"--resume: {path} is not a checkpoint written by train.py")
    return checkpoint


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.output = args.output or default_output(args.dataroot)
    checkpoint = None
    if args.decay_epoch is not None:
        raise UserError(f"--decay_epoch is now the authors' --n_epochs_decay: --n_epochs N "
                        f"--decay_epoch {args.decay_epoch} of before is --n_epochs "
                        f"{args.decay_epoch} --n_epochs_decay N-{args.decay_epoch} (the epochs "
                        "at the full rate, then the epochs of decay)")
    if args.resume:
        checkpoint = read_checkpoint(os.path.join(args.output, "checkpoint.pth"))
        saved = saved_options(checkpoint)
        # A ResNet's netG follows --n_blocks, so that --n_blocks alone can be compared.
        parser.set_defaults(**{k: v for k, v in saved.items()
                               if not (k == "netG" and v.startswith("resnet"))})
        output = args.output
        args = parser.parse_args(argv)
        args.output = output
        resolve_generator(args)
        mismatch = [f"--{k} {getattr(args, k)} (checkpoint: {saved[k]})"
                    for k in ARCHITECTURE if k in saved and getattr(args, k) != saved[k]]
        if mismatch:
            raise UserError(f"--resume: {', '.join(mismatch)}; drop these flags to continue "
                            "the run")
    del args.decay_epoch  # given, it was refused above
    resolve_generator(args)
    if args.load_size is None:
        args.load_size = default_load_size(args.size)
    try:
        check_args(args)
    except UserError as e:
        if args.resume:
            raise UserError(f"{e} (with --resume, options not given again are the checkpoint's)")
        raise
    return args, checkpoint


def saved_options(checkpoint):
    """A checkpoint's options, but those the command line cannot give. Checkpoints written
    before the authors' schedule options counted --n_epochs in all, decaying from
    --decay_epoch: the same schedule in their terms; --compile was on or off."""
    once = ("output", "resume", "continue_train", "epoch", "epoch_count")  # how it started
    saved = {k: v for k, v in checkpoint["options"].items() if k not in once}
    start = saved.pop("decay_epoch", None)
    if start is not None:
        saved.update(n_epochs=start, n_epochs_decay=saved["n_epochs"] - start)
    if isinstance(saved.get("compile"), bool):  # a flag before --compile auto|on|off
        saved["compile"] = "on" if saved["compile"] else "off"
    return saved


def resolve_generator(args):
    """--netG and --n_blocks as one: netG resnet_<n_blocks>blocks for any ResNet, n_blocks
    None for a U-Net."""
    if args.netG is None:
        args.netG = f"resnet_{args.n_blocks or 9}blocks"
    elif args.n_blocks is not None and args.netG != f"resnet_{args.n_blocks}blocks":
        raise UserError(f"--netG {args.netG} and --n_blocks {args.n_blocks} disagree; give one")
    blocks = args.netG.removeprefix("resnet_").removesuffix("blocks")
    args.n_blocks = int(blocks) if blocks.isdigit() else None


def epochs(args):
    """The length of the run: the epochs at the full rate, then those of decay."""
    return args.n_epochs + args.n_epochs_decay


def check_args(args):
    rules = [
        (not crop_problem(args.size, args.netG, args.netD, args.n_layers_D),
         f"--size {args.size}: {crop_problem(args.size, args.netG, args.netD, args.n_layers_D)}"),
        (args.netG.startswith("resnet") or args.preprocess in CROPPING,
         f"--netG {args.netG} takes sides of a multiple of {args.netG.split('_')[1]}: use a "
         "--preprocess that crops"),
        (args.lambda_identity == 0 or args.input_nc == args.output_nc,
         f"--input_nc {args.input_nc} --output_nc {args.output_nc}: the identity loss feeds each "
         "generator images of its output domain, so it needs equal channel counts; add "
         "--lambda_identity 0"),
        (args.lr_policy != "cosine" or args.n_epochs >= 1,
         "--lr_policy cosine: the half cosine spans --n_epochs, which must be at least 1"),
        (args.load_size >= args.size,
         f"--load_size {args.load_size}: must be at least --size {args.size}"),
        (args.batch_size == 1 or args.preprocess in CROPPING,
         f"--preprocess {args.preprocess} gives images of their own sizes, which cannot share a "
         f"batch: use --batch_size 1, or a --preprocess that crops"),
        (args.n_epochs >= 0, f"--n_epochs {args.n_epochs}: must be at least 0"),
        (args.n_epochs_decay >= 0, f"--n_epochs_decay {args.n_epochs_decay}: must be at least 0"),
        (epochs(args) >= 1, "--n_epochs 0 --n_epochs_decay 0: the run needs at least one epoch"),
        (not (args.resume and args.continue_train), "--resume and --continue_train: choose one "
         "(--resume continues exactly from checkpoint.pth)"),
        (args.lr > 0, f"--lr {args.lr}: must be positive"),
        (args.time_budget is None or args.time_budget > 0,
         f"--time_budget {args.time_budget}: must be more than 0 seconds"),
        (args.time_budget is None or args.lr_policy == "linear",
         f"--time_budget and --lr_policy {args.lr_policy}: a time budget has its own schedule, "
         "linear over its second half; drop --lr_policy"),
        (0 <= args.seed < 2**32, f"--seed {args.seed}: must be between 0 and 2**32 - 1"),
        (1 <= args.visdom_port <= 65535,
         f"--visdom_port {args.visdom_port}: must be between 1 and 65535"),
    ]
    for ok, message in rules:
        if not ok:
            raise UserError(message)
    require(args, 1, "batch_size", "ngf", "ndf", "n_blocks", "n_layers_D", "lr_decay_iters",
            "log_every", "sample_every", "save_every")
    require(args, 0, "lambda_cycle", "lambda_A", "lambda_B", "lambda_identity", "pool_size",
            "workers", "eval_every", "save_epoch_freq")
    require(args, 1, "epoch_count", "max_dataset_size")


# Saving and resuming

@dataclasses.dataclass(frozen=True)
class Position:
    """Where a run stands, as its checkpoint keeps it. `epoch` counts from 0: the epoch under
    way or, when `pairs` is 0, the next one to start, which is then also the number of epochs
    done. `pairs` is how many training pairs of that epoch have been trained on (all
    processes together), `iteration` the optimisation steps so far, `seconds` the training
    time so far."""
    epoch: int = 0
    pairs: int = 0
    iteration: int = 0
    seconds: float = 0.0

    def after_step(self, pairs):
        return dataclasses.replace(self, pairs=self.pairs + pairs, iteration=self.iteration + 1)

    def next_epoch(self, seconds):
        return dataclasses.replace(self, epoch=self.epoch + 1, pairs=0, seconds=seconds)


def check_same_weights(model, world_size):
    """All processes must hold bit-identical weights; compare their SHA-256 digests."""
    digest = hashlib.sha256()
    for net in model.networks().values():
        for tensor in net.state_dict().values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
    digests = [None] * world_size
    dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) > 1:
        raise RunFailure("the torchrun processes no longer hold the same weights; nothing saved")


def non_finite(model):
    """The names of the networks holding a weight that is not finite, found with one wait for
    the device rather than one per weight."""
    finite = torch.stack([torch.stack([p.isfinite().all() for p in net.parameters()]).all()
                          for net in model.networks().values()])
    return [name for name, ok in zip(model.networks(), finite.tolist()) if not ok]


def save_run(model, args, launch, at):
    """Bare generator and discriminator weights, then the full checkpoint, each written
    atomically so that a kill at any moment leaves the previous complete files, and all as
    CPU tensors, so that they load on a machine without a GPU even where the loader gives no
    map_location. Weights that are no longer finite are never written over good ones. Under
    torchrun every process checks that all hold the same weights, and rank 0 writes."""
    bad = non_finite(model)
    if bad:
        raise RunFailure(f"{bad[0]} has non-finite weights at iteration {at.iteration}; "
                         f"nothing saved, {args.output}/checkpoint.pth keeps the last good "
                         "state; try a lower --lr")
    if launch.world_size > 1:
        check_same_weights(model, launch.world_size)
    if not launch.writes:
        return
    for name, net in model.networks().items():
        atomic_save(on_cpu(net.state_dict()), os.path.join(args.output, f"net{name}.pth"))
    checkpoint = {"model": on_cpu(model.state_dict()), "epoch": at.epoch, "pairs": at.pairs,
                  "iteration": at.iteration, "seconds": at.seconds, "options": vars(args),
                  "world_size": launch.world_size,
                  "rng": {"torch": torch.get_rng_state()}}  # training draws from no CUDA generator
    atomic_save(checkpoint, os.path.join(args.output, "checkpoint.pth"))


def save_snapshot(model, args, epochs_done):
    """The generators after `epochs_done` epochs, kept beside the latest for test.py --epoch N
    (GAN quality swings from epoch to epoch)."""
    for name in ("G_A2B", "G_B2A"):
        atomic_save(on_cpu(model.networks()[name].state_dict()),
                    os.path.join(args.output, f"{epochs_done}_net{name}.pth"))


def continue_from(model, args):
    """--continue_train: the four networks from --output, train.py's files or the authors'
    (weights.network_files knows both names); returns the Position at --epoch_count."""
    epoch = None if args.epoch == "latest" else args.epoch
    for name, net in model.networks().items():
        paths = network_files(args.output, name, epoch)
        path = existing(paths)
        if path is None:
            names = " or ".join(os.path.basename(p) for p in paths)
            raise UserError(f"--continue_train: {args.output} has no {names}")
        try:
            net.load_state_dict(load_weights(path))
        except Exception as e:
            raise UserError(f"--continue_train: {path} does not fit this run's networks "
                            f"({describe(e)}); give the network options it was trained with "
                            "(--netG, --ngf, --input_nc, ...)")
    print(f"continuing from the networks in {args.output} at epoch {args.epoch_count}, with "
          "fresh optimisers")
    return Position(epoch=args.epoch_count - 1)


def restore(model, checkpoint, launch):
    """Load a checkpoint into the model; returns its Position. Under torchrun the processes
    other than rank 0 start with empty replay buffers."""
    state = dict(checkpoint["model"])
    if not launch.writes:
        state.pop("pool_A"), state.pop("pool_B")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"--resume: the checkpoint's weights do not fit its options "
                        f"({describe(e)})")
    torch.set_rng_state(checkpoint["rng"]["torch"])
    # Checkpoints written before December 2026 keep the pairs under "position".
    pairs = checkpoint["pairs"] if "pairs" in checkpoint else checkpoint["position"]
    at = Position(checkpoint["epoch"], pairs, checkpoint["iteration"], checkpoint["seconds"])
    if launch.writes:
        print(f"resuming at epoch {at.epoch + 1}, iteration {at.iteration}")
    return at


def prepare_output(args):
    """Create the output folders and write options.json: an unwritable --output fails here,
    before any model is built."""
    try:
        os.makedirs(os.path.join(args.output, "samples"), exist_ok=True)
        atomic_write_text(json.dumps(vars(args), indent=2) + "\n",
                          os.path.join(args.output, "options.json"))
    except OSError as e:
        raise UserError(f"--output {args.output}: cannot write there ({e.strerror or e})")


# What a run records besides its weights

class TrainingRecord:
    """What a run shows and keeps besides its weights: the mean of each loss over every
    --log_every iterations (losses.csv and visdom), sample grids, FID (metrics.csv and
    visdom), and the training clock, which counts on from the checkpoint on resume. Under
    torchrun the losses are averaged over the processes, and rank 0 alone writes and plots."""

    def __init__(self, args, at, launch):
        self.output, self.world_size, self.writes = args.output, launch.world_size, launch.writes
        self.samples = os.path.join(args.output, "samples")
        self.log = LossLog(os.path.join(args.output, "losses.csv"), LOSS_FIELDS)
        self.metrics = LossLog(os.path.join(args.output, "metrics.csv"), METRIC_FIELDS)
        if self.writes:
            self.log.truncate_after(at.iteration)
            self.metrics.truncate_after(at.iteration)
        self.dashboard, self.server = None, None
        if self.writes and not args.no_visdom:
            self.server = ensure_server(args.visdom_server, args.visdom_port,
                                        os.path.join(args.output, "visdom_server.log"))
        if self.server and self.server.answers:
            self.dashboard = Dashboard(
                args.visdom_server, args.visdom_port,
                env=os.path.basename(os.path.normpath(args.output)), options=vars(args),
                history=self.log.rows, loss_names=LOSS_NAMES)
        self.start = time.perf_counter() - at.seconds
        self.total, self.count, self.read_at = None, 0, at.iteration
        self.session_start = self.share_from = time.perf_counter()
        self.data_wait = self.total_wait = 0.0

    def seconds(self):
        return time.perf_counter() - self.start

    def waited(self, seconds):
        """Add time spent waiting for the data loader's next batch."""
        self.data_wait += seconds
        self.total_wait += seconds

    def data_share(self):
        """The share of the time since the last call spent waiting for data."""
        now = time.perf_counter()
        share = self.data_wait / max(now - self.share_from, 1e-9)
        self.data_wait, self.share_from = 0.0, now
        return share

    def add(self, losses):
        """Add one step's Losses (tensors on the training device; nothing waits for them)."""
        losses = torch.stack(losses)
        self.total = losses if self.total is None else self.total + losses
        self.count += 1

    def read(self, at):
        """Wait for the device; returns the mean of each loss since the last flush, averaged
        over the torchrun processes. A loss that is no longer finite stops the run before
        anything is saved from it."""
        if not self.count:
            return {}
        means = self.total / self.count
        if self.world_size > 1:
            dist.all_reduce(means)
            means /= self.world_size
        means = dict(zip(LOSS_NAMES, means.tolist()))
        bad = [(name, value) for name, value in means.items() if not math.isfinite(value)]
        if bad:
            name, value = bad[0]
            when = (f"at iteration {at.iteration}" if self.read_at + 1 == at.iteration
                    else f"between iterations {self.read_at + 1} and {at.iteration}")
            checkpoint = os.path.join(self.output, "checkpoint.pth")
            kept = (f"so {checkpoint} keeps the last good state" if os.path.exists(checkpoint)
                    else "and no checkpoint had been saved yet")
            raise RunFailure(f"{name} became {value} {when} (epoch {at.epoch + 1}); stopped "
                             f"without saving, {kept}; try a lower --lr")
        self.read_at = at.iteration
        return means

    def flush(self, at, lr, means):
        """A row of losses.csv and visdom: the means that `read` returned, and the lr."""
        row = {"iteration": at.iteration, "epoch": at.epoch + 1, **means, "lr": lr,
               "seconds": round(self.seconds(), 3)}
        if self.writes:
            self.log.append(row)
        if self.dashboard:
            self.dashboard.plot(row)
        self.total, self.count = None, 0

    def sample(self, iteration, visuals):
        if self.writes:
            save_visuals(visuals, os.path.join(self.samples, f"iter_{iteration:07d}.png"))
        if self.dashboard:
            self.dashboard.show(visuals_grid(visuals), " | ".join(VISUAL_NAMES))

    def add_metrics(self, row):
        """A row of metrics.csv and the FID plot; returns whether its mean FID is the lowest
        so far."""
        best = min((r["mean_fid"] for r in self.metrics.rows()), default=float("inf"))
        self.metrics.append(row)
        if self.dashboard:
            self.dashboard.plot_fid(row)
        return row["mean_fid"] < best

    def close(self):
        if self.dashboard:
            self.dashboard.close()
        if self.server and self.server.pid:
            tqdm.write(f"visdom: the plots stay at {self.dashboard.address}; the server keeps "
                       f"running: stop it with `{self.server.stop_command()}`")


# The training loop

class Launch:
    """This process's place in a torchrun launch, and its device: rank 0 of 1 without torchrun.
    Under torchrun the process group is set up here (NCCL on CUDA, gloo on the CPU), and
    each process uses the GPU of its LOCAL_RANK."""

    def __init__(self, device_name):
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.writes = self.rank == 0  # rank 0 alone writes files and plots
        self.torchrun = "LOCAL_RANK" in os.environ
        self.device = pick_device(device_name)
        if self.torchrun:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
                torch.cuda.set_device(self.device)
            # Long enough for the processes that wait at a barrier while rank 0 runs an
            # --eval_every evaluation (NCCL's default is 10 minutes); torchrun itself ends the
            # group when a process dies.
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(hours=2))

    def close(self):
        if self.torchrun and dist.is_initialized():
            dist.destroy_process_group()


@dataclasses.dataclass
class Run:
    """What the training loop works with."""
    args: argparse.Namespace
    launch: Launch
    model: CycleGAN
    record: TrainingRecord
    schedule: "Schedule"


class Interrupted(Exception):
    """Stopped by a signal after saving a checkpoint; args: message, exit status."""


def check_evaluation(args):
    """Fail at start-up, not after the first epochs, if --eval_every cannot work."""
    for domain in "AB":
        list_images(domain_dir(args.dataroot, "test", domain))
    inception_network(args.inception, torch.device("cpu"))


def training_images(args, checkpoint, launch):
    """The usable image paths of trainA and trainB; files that are not are listed once. Also
    refuses to start a new run over an existing one, and prepares --output. One of the authors'
    datasets is downloaded first if --dataroot names it and is not there."""
    fetch_dataset(args.dataroot, allowed=not launch.torchrun)
    (paths_A, skipped_A), (paths_B, skipped_B) = (
        list_images(domain_dir(args.dataroot, args.phase, d)) for d in "AB")
    paths_A, paths_B = paths_A[:args.max_dataset_size], paths_B[:args.max_dataset_size]
    if launch.writes:
        report_skipped(skipped_A + skipped_B)
    if checkpoint is None and os.path.exists(os.path.join(args.output, "checkpoint.pth")):
        raise UserError(f"{args.output} already holds a run; add --resume to continue it, "
                        "or choose another --output")
    if launch.writes:
        prepare_output(args)
        if args.eval_every:
            check_evaluation(args)
    return paths_A, paths_B


def build_model(args, launch):
    networks = {k: getattr(args, k) for k in ("input_nc", "output_nc", "netG", "netD",
                                              "n_layers_D", "norm", "init_type", "init_gain")}
    model = CycleGAN(device=launch.device, ngf=args.ngf, ndf=args.ndf, networks=networks,
                     gan_mode=args.gan_mode, lr=args.lr, beta1=args.beta1,
                     lambda_cycle=args.lambda_cycle, lambda_A=args.lambda_A, lambda_B=args.lambda_B,
                     lambda_identity=args.lambda_identity, pool_size=args.pool_size,
                     seed=args.seed, amp=use_amp(args.amp, launch.device),
                     channels_last=args.channels_last, rank=launch.rank)
    return model


def compile_if_it_pays(model, args, launch, at, iterations):
    """torch.compile the networks as --compile decides for the rest of a run of `iterations`
    per epoch (or of its time budget), from `at`; returns how they run, for the start-up
    line."""
    done = at.pairs // (args.batch_size * launch.world_size)
    left = iterations * (epochs(args) - at.epoch) - done
    seconds = args.time_budget and args.time_budget - at.seconds
    mode, note = use_compile(args.compile, launch.device, left, seconds)
    if mode is None:
        return f"eager{': ' + note if note else ''}"
    # torch's C++ build helper warns about CUDA_HOME on machines without CUDA; harmless here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    eager_where_compiling_fails()
    model.compile(mode)
    graphs = ", with CUDA graphs" if model.graphs else ""
    return (f"compiled{graphs}{'; ' + note if note else ''}: the first iterations compile "
            "(minutes; cached for later runs)")


def build_loader(args, launch, paths_A, paths_B):
    dataset = UnalignedDataset(paths_A, paths_B, args.load_size, args.size,
                               flip=not args.no_flip, preprocess=args.preprocess,
                               channels=(args.input_nc, args.output_nc))
    sampler = EpochSampler(len(paths_A), len(paths_B), args.seed, rank=launch.rank,
                           world_size=launch.world_size, serial=args.serial_batches)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        persistent_workers=args.workers > 0, pin_memory=launch.device.type == "cuda",
        worker_init_fn=ignore_stop_signals)
    return sampler, loader


def epoch_bar(loader, at, run):
    """The progress bar of epoch `at.epoch`, counting on from where a resumed run stopped, and
    under a time budget counting that down too. Its speed, and so the time left, is the
    average since the bar opened: tqdm's default moving average over the last few iterations
    made the time left swing on a busy machine, and showed hours right after a resume, whose
    first iteration is slow."""
    args, launch = run.args, run.launch
    done = at.pairs // (args.batch_size * launch.world_size)
    return tqdm(loader, desc=run.schedule.description(at), initial=done,
                total=done + len(loader), dynamic_ncols=True, smoothing=0, bar_format=BAR_FORMAT,
                disable=not launch.writes)


def bar_losses(means, data_share):
    """loss_G and loss_D for the progress bar, short enough that the bar, the counts and the
    time left keep their room at 80 columns (all five losses are in losses.csv), and the share
    of the time spent waiting for the data loader where it holds training back."""
    losses = f"G={means['loss_G']:.3g} D={means['loss_D']:.3g}" if means else ""
    return losses + (f" data {data_share:.0%}" if data_share >= DATA_SHARE_SHOWN else "")


def agree_to_stop(stop, launch, read_due):
    """Whether to save and stop after this iteration. A single process stops as soon as it is
    signalled. The processes of a torchrun launch must stop at the same iteration, so they
    compare flags where all of them read the losses, and stop together if any was signalled."""
    if not launch.torchrun:
        return stop.received is not None
    if not read_due:
        return False
    flags = torch.tensor([float(stop.received is not None)], device=launch.device)
    dist.all_reduce(flags)
    return flags.item() > 0


def interrupted(run, stop, bar, at):
    """The exception that ends a run stopped by a signal, once the bar shows the saved batch:
    tqdm's count lags the batches it has handed out until it prints."""
    bar.n = at.pairs // (run.args.batch_size * run.launch.world_size)
    bar.close()
    signum = stop.received or signal.SIGTERM  # another torchrun process was signalled
    return Interrupted(f"train.py: {signum.name}: saved iteration {at.iteration} in "
                       f"{run.args.output}; continue with --resume", 128 + signum)


class Schedule:
    """The learning rate and the end of the run: epoch by epoch, as the authors' policies, or by
    the training clock under --time_budget. The clock is read where the losses are (every
    READ_EVERY iterations); under torchrun it is rank 0's, so that all processes set the same
    rate and stop at the same iteration."""

    def __init__(self, args, launch, record):
        self.args, self.launch, self.record = args, launch, record
        self.budget, self.seconds = args.time_budget, record.seconds()

    def clock(self):
        """Seconds of training so far; under torchrun rank 0's, which all processes ask for
        together."""
        if self.launch.world_size == 1:
            return self.record.seconds()
        seconds = torch.tensor([self.record.seconds() if self.launch.writes else 0.0],
                               dtype=torch.float64, device=self.launch.device)
        dist.all_reduce(seconds)
        return seconds.item()

    def more(self, at):
        """Whether the run goes on from `at`: by the clock as `at` (and the checkpoint) keeps
        it, so that a resumed run decides as the saved one did."""
        if self.budget is None:
            return at.epoch < epochs(self.args)
        return at.seconds < self.budget

    def lr(self, at):
        """The rate at `at` (by the clock under a time budget); the clock's reading is kept for
        the progress bar."""
        if self.budget is None:
            args = self.args
            return args.lr * lr_factor(args.lr_policy, at.epoch, args.n_epochs,
                                       args.n_epochs_decay, args.lr_decay_iters)
        self.seconds = self.clock()
        return self.args.lr * budget_lr_factor(self.seconds, self.budget)

    def over(self):
        """Whether the time budget ran out at the last reading of the clock."""
        return self.budget is not None and self.seconds >= self.budget

    def description(self, at):
        if self.budget is None:
            return f"epoch {at.epoch + 1}/{epochs(self.args)}"
        left = datetime.timedelta(seconds=round(max(0.0, self.budget - self.seconds)))
        return f"epoch {at.epoch + 1}, {left} of {datetime.timedelta(seconds=self.budget)} left"


def train_epoch(run, bar, at, stop):
    """Train on the batches of `bar`, the rest of epoch `at.epoch`; returns the Position at
    its end, or where the time budget ran out (then saved), and whether it did. On
    SIGINT/SIGTERM, saves and raises Interrupted."""
    args, launch, model, record = run.args, run.launch, run.model, run.record
    lr = run.schedule.lr(at)
    model.set_lr(lr)
    fetched = time.perf_counter()
    for data in bar:
        record.waited(time.perf_counter() - fetched)
        record.add(model.step(data["A"], data["B"]))
        at = at.after_step(args.batch_size * launch.world_size)
        log_due = at.iteration % args.log_every == 0
        save_due = at.iteration % args.save_every == 0
        read_due = log_due or save_due or at.iteration % READ_EVERY == 0
        stopping = agree_to_stop(stop, launch, read_due)
        if read_due and run.schedule.budget:
            lr = run.schedule.lr(at)
            model.set_lr(lr)
            bar.set_description_str(run.schedule.description(at), refresh=False)
        if read_due or stopping:
            show_losses(record, bar, at, lr if log_due else None)
        if at.iteration % args.sample_every == 0:
            record.sample(at.iteration, model.visuals)
        over = read_due and run.schedule.over()
        if save_due or stopping or over:
            at = dataclasses.replace(at, seconds=record.seconds())
            save_run(model, args, launch, at)
        if stopping:
            raise interrupted(run, stop, bar, at)
        if over:
            return at, True
        fetched = time.perf_counter()
    record.read(at)  # the finiteness check, before the epoch-end checkpoint
    return at, False


def show_losses(record, bar, at, lr):
    """The mean losses on the progress bar and, given the `lr`, in losses.csv and visdom."""
    means = record.read(at)
    bar.set_postfix_str(bar_losses(means, record.data_share()), refresh=False)
    if lr is not None:
        record.flush(at, lr, means)


def keep_best(output, row):
    """Copy the generator and discriminator weights into best/, each file atomically."""
    best = os.path.join(output, "best")
    os.makedirs(best, exist_ok=True)
    for name in ("G_A2B", "G_B2A", "D_A", "D_B"):
        atomic_save(torch.load(os.path.join(output, f"net{name}.pth"), weights_only=True),
                    os.path.join(best, f"net{name}.pth"))
    atomic_write_text(json.dumps(row, indent=2) + "\n", os.path.join(best, "metrics.json"))


def evaluate_epoch(args, at, device, record):
    """FID and KID of the weights saved at the end of an epoch (evaluate.py, in its own
    process) into metrics.csv and visdom; best/ gets the weights when their mean FID is the
    lowest so far. A failed evaluation is a warning: training goes on."""
    epochs_done = at.epoch  # at an epoch's end, Position.epoch is the next one, from 0
    inception = ["--inception", args.inception] if args.inception else []
    status, error = run_sibling("evaluate.py", "--dataroot", args.dataroot, "--weights",
                                args.output, "--device", device, "--json",
                                os.path.join(args.output, "metrics.json"), "--dims",
                                args.eval_dims, *inception)
    if status:
        tqdm.write(f"warning: evaluation after epoch {epochs_done} failed: {error or status}",
                   file=sys.stderr)
        return
    with open(os.path.join(args.output, "metrics.json")) as f:
        report = json.load(f)
    row = {"iteration": at.iteration, "epoch": epochs_done, "mean_fid": report["mean_fid"]}
    for direction in ("A2B", "B2A"):
        row.update({f"{key}_{direction}": report[direction][key]
                    for key in ("fid", "kid", "kid_std")})
    tqdm.write(f"epoch {epochs_done}: FID A2B {row['fid_A2B']:.2f}, B2A {row['fid_B2A']:.2f}; "
               f"KID x 1000 A2B {row['kid_A2B'] * 1000:.2f}, B2A {row['kid_B2A'] * 1000:.2f}")
    if record.add_metrics(row):
        keep_best(args.output, row)


def auto_bf16_note(args, device, amp_dtype):
    """Why --amp auto trains in bf16 on this CPU, for the start-up line."""
    if args.amp != "auto" or device.type != "cpu" or amp_dtype is None:
        return ""
    return f", as --amp auto chooses on CPUs with {cpu_bf16()} (--amp off for fp32)"


def iterations_per_epoch(args, launch, paths_A, paths_B):
    """Optimisation steps per epoch in each process: the larger domain's images, shared out
    among the processes, in batches."""
    per_process = math.ceil(max(len(paths_A), len(paths_B)) / launch.world_size)
    return math.ceil(per_process / args.batch_size)


def start_line(args, launch, model, paths, how):
    """What the run is: its images, iterations, processes, device, precision and `how` the
    networks run (compiled or eager, and why)."""
    paths_A, paths_B = paths
    iterations = iterations_per_epoch(args, launch, paths_A, paths_B)
    processes = (f", {launch.world_size} process(es) x batch {args.batch_size} = global batch "
                 f"{args.batch_size * launch.world_size}" if launch.torchrun else "")
    precision = precision_name(model.amp_dtype) + auto_bf16_note(args, launch.device,
                                                                 model.amp_dtype)
    if model.amp_dtype is None and launch.device.type == "cuda" and native_bf16(launch.device):
        precision += ", TF32 convolutions"  # tensor cores for TF32 came with those for bf16
    return (f"{len(paths_A)} A and {len(paths_B)} B images, {iterations} iterations per epoch"
            f"{processes}, device {launch.device} ({precision}; {how}), output {args.output}")


def train(args, checkpoint, launch):
    """Every epoch from where the run stands to the last, each ending with a checkpoint
    and, every --eval_every epochs, an evaluation."""
    set_fp32_precision("tf32")
    if launch.device.type == "cuda" and args.preprocess in CROPPING:
        # Training crops all have one size, so cuDNN may pick the fastest algorithms once.
        torch.backends.cudnn.benchmark = True
    paths_A, paths_B = training_images(args, checkpoint, launch)
    model = build_model(args, launch)
    at = (restore(model, checkpoint, launch) if checkpoint
          else continue_from(model, args) if args.continue_train else Position())
    how = compile_if_it_pays(model, args, launch, at,
                             iterations_per_epoch(args, launch, paths_A, paths_B))
    if launch.torchrun:
        model.distribute()
    record = TrainingRecord(args, at, launch)
    run = Run(args, launch, model, record, Schedule(args, launch, record))
    sampler, loader = build_loader(args, launch, paths_A, paths_B)
    if launch.writes:
        print(start_line(args, launch, model, (paths_A, paths_B), how))
    with StopSignals(second_quits=not launch.torchrun) as stop, contextlib.closing(run.record):
        while run.schedule.more(at):
            sampler.set_epoch(at.epoch, start=at.pairs)
            with epoch_bar(loader, at, run) as bar:
                at, over = train_epoch(run, bar, at, stop)
            if over:
                break
            at = at.next_epoch(run.schedule.clock())
            save_run(model, args, launch, at)
            if launch.writes and args.save_epoch_freq and at.epoch % args.save_epoch_freq == 0:
                save_snapshot(model, args, at.epoch)
            if args.eval_every and at.epoch % args.eval_every == 0:
                if launch.writes:
                    evaluate_epoch(args, at, launch.device, run.record)
                if launch.world_size > 1:
                    dist.barrier()  # the others wait while rank 0 evaluates
    if launch.writes:
        print(farewell(args, launch, at, run.record))


def farewell(args, launch, at, record):
    same = (f"; the {launch.world_size} processes ended with identical weights"
            if launch.world_size > 1 else "")
    waited = record.total_wait / max(time.perf_counter() - record.session_start, 1e-9)
    length = (f"the time budget of {datetime.timedelta(seconds=args.time_budget)}, in epoch "
              f"{at.epoch + 1}," if args.time_budget else f"{epochs(args)} epoch(s)")
    return (f"done after {length} and {at.iteration} iterations{same}; "
            f"{waited:.1%} of this session's time went to waiting for data; weights in "
            f"{args.output}")


def report(message, status, launch):
    """One line on stderr, then exit. Under torchrun a mistake found before the processes
    connect is the same in all of them and is reported by the first process on each machine;
    later ones are reported by every process that meets them, with its rank."""
    if launch is None:
        fail(f"train.py: {message}" if int(os.environ.get("LOCAL_RANK", 0)) == 0 else "", status)
    prefix = f"train.py (rank {launch.rank})" if launch.world_size > 1 else "train.py"
    fail(f"{prefix}: {message}", status)


def main(argv=None):
    print_any_file_name()
    launch = None
    try:
        args, checkpoint = parse_args(argv)
        launch = Launch(args.device)
        with (claimed(args.output, "train.py", "--output") if launch.writes
              else contextlib.nullcontext()):
            train(args, checkpoint, launch)
    except UserError as e:
        report(f"error: {e}", 2, launch)
    except RunFailure as e:
        report(f"error: {e}", 1, launch)
    except Interrupted as e:
        message, status = e.args
        fail(message if launch.rank == 0 else "", status)  # the processes stopped together
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        report("interrupted; files on disk are complete, continue with --resume if a checkpoint "
               "was saved", 130, launch)
    except OSError as e:  # a full disk or a vanished folder; files are written atomically
        report(f"error: {e.strerror or e}: {e.filename or ''}; the last complete checkpoint is "
               "intact, continue with --resume once this is fixed", 1, launch)
    except (dist.DistError, RuntimeError) as e:
        if not (launch and launch.torchrun):
            raise
        report(f"error: {describe(e)}; under torchrun this usually means that another process "
               "stopped first (see its message) or that the network failed", 1, launch)
    finally:
        if launch:
            launch.close()


if __name__ == "__main__":
    main(sys.argv[1:])
