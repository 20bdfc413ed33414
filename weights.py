"""Generators loaded for translation: from a training output folder (train.py's, or the
authors' checkpoints/NAME), a generator .pth file or train.py's checkpoint.pth, or the authors'
published generators, downloaded once. The architecture (--ngf, --n_blocks) is read from the
weights, and a file that does not fit says how.
"""
import functools
import os
import re

from models import make_generator
from utils import AUTHORS_NAMES, DIRECTIONS, RunFailure, UserError, download, load_weights

# The authors' published generators, each translating one way, and the one for the way back.
PRETRAINED = {
    "horse2zebra": "zebra2horse", "zebra2horse": "horse2zebra",
    "summer2winter_yosemite": "winter2summer_yosemite",
    "winter2summer_yosemite": "summer2winter_yosemite",
    "apple2orange": "orange2apple", "orange2apple": "apple2orange",
    "style_monet": "monet2photo", "monet2photo": "style_monet",
    "style_cezanne": None, "style_ukiyoe": None, "style_vangogh": None,
    "sat2map": "map2sat", "map2sat": "sat2map",
    "facades_photo2label": "facades_label2photo", "facades_label2photo": "facades_photo2label",
    "iphone2dslr_flower": None,
    "cityscapes_photo2label": "cityscapes_label2photo",
    "cityscapes_label2photo": "cityscapes_photo2label",
}
MODELS_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models"
PRETRAINED_CACHE = os.path.join("output", "pretrained")


def pretrained_path(name):
    """Where the authors' generator NAME is kept once downloaded."""
    return os.path.join(PRETRAINED_CACHE, f"{name}.pth")


def fetch_pretrained(name):
    """Download the authors' generator NAME to pretrained_path(NAME), unless it is there."""
    path = pretrained_path(name)
    if os.path.isfile(path):
        return
    try:
        os.makedirs(PRETRAINED_CACHE, exist_ok=True)
    except OSError as e:
        raise UserError(f"{PRETRAINED_CACHE}: cannot write there ({e.strerror or e})")
    url = f"{os.environ.get('CYCLEGAN_MODELS_URL', MODELS_URL).rstrip('/')}/{name}.pth"
    download(url, path, hint="or set CYCLEGAN_MODELS_URL to a mirror")
    try:
        load_weights(path)
    except Exception:
        os.remove(path)  # else every later run would find it cached and fail on it
        raise RunFailure(f"{url} did not give a weights file torch can read; removed it, run again "
                         "to download it anew")


def load_generators(weights, directions, ngf, n_blocks, device, epoch=None):
    """{direction: (G, G_back)}: the generator for each direction, and the one for the way back
    (for reconstructions) where the weights hold both, else None; on `device`, in eval mode.
    `epoch` picks a folder's snapshot of that epoch instead of its latest weights."""
    states = generator_states(weights, directions, epoch)
    nets = {d: build_generator(*states[d], ngf, n_blocks, device) for d in directions}
    pairs = {}
    for direction in directions:
        back = "B2A" if direction == "A2B" else "A2B"
        G_back = nets.get(back)
        if G_back is None and holds_both(weights, epoch):
            path, state = generator_states(weights, [back], epoch)[back]
            G_back = build_generator(path, state, ngf, n_blocks, device)
        pairs[direction] = (nets[direction], G_back)
    return pairs


def generator_states(weights, directions, epoch=None):
    """{direction: (file, state_dict)} from a training output folder (train.py's or the
    authors'), a bare generator file (ours or the authors'), or train.py's checkpoint.pth
    (which holds both generators)."""
    if os.path.isdir(weights):
        files = {d: generator_file(weights, d, epoch) for d in directions}
        return {d: (path, _read(path)) for d, path in files.items()}
    if epoch is not None:
        raise UserError(f"--epoch {epoch}: goes with a training output folder, and --weights "
                        f"{weights} is a file")
    if not os.path.isfile(weights):
        raise UserError(f"--weights {weights}: no such file or folder")
    state = _read(weights)
    if isinstance(state, dict) and "model" in state:
        return {d: (weights, state["model"][DIRECTIONS[d].generator]) for d in directions}
    if len(directions) > 1:
        raise UserError(f"{weights}: holds one generator; add --direction A2B or B2A")
    return {directions[0]: (weights, state)}


def network_files(folder, name, epoch=None):
    """Where a training output folder keeps network `name` (G_A2B, D_A, ...): train.py's
    netG_A2B.pth (EPOCH_netG_A2B.pth for a snapshot), then the authors' latest_net_G_A.pth
    (EPOCH_net_G_A.pth), under their name for it (AUTHORS_NAMES)."""
    ours, theirs = f"net{name}.pth", f"net_{AUTHORS_NAMES[name]}.pth"
    return [os.path.join(folder, ours if epoch is None else f"{epoch}_{ours}"),
            os.path.join(folder, f"{epoch or 'latest'}_{theirs}")]


def existing(paths):
    """The first of `paths` that is a file, or None."""
    return next((path for path in paths if os.path.isfile(path)), None)


def generator_file(folder, direction, epoch=None):
    candidates = network_files(folder, DIRECTIONS[direction].generator, epoch)
    found = existing(candidates)
    if found is None:
        names = " or ".join(os.path.basename(path) for path in candidates)
        raise UserError(f"{folder}: has no {names}; --weights takes a folder written by "
                        "train.py or the authors' checkpoints/NAME" +
                        ("" if epoch is None else f", with a snapshot of epoch {epoch}"))
    return found


def holds_both(weights, epoch=None):
    """Whether `weights` has G_A2B and G_B2A: a full training output folder or a checkpoint."""
    if os.path.isdir(weights):
        return all(existing(network_files(weights, d.generator, epoch))
                   for d in DIRECTIONS.values())
    state = _read(weights)
    return isinstance(state, dict) and "model" in state


def _read(path):
    try:
        return _load(os.path.abspath(path), os.stat(path).st_mtime_ns)
    except Exception as e:
        raise UserError(f"{path}: not a weights file torch can read safely ({type(e).__name__})")


@functools.lru_cache(maxsize=2)  # holds_both and generator_states may both read one checkpoint.pth
def _load(path, mtime_ns):
    return load_weights(path)


def build_generator(path, state, ngf, n_blocks, device):
    """The generator `state` holds (architecture() reads which), holding it; --ngf and
    --n_blocks, if given, must agree with the file."""
    found = architecture(state)
    if found is None:
        raise UserError(f"{path}: holds no CycleGAN generator (no model.1.weight, nor a U-Net's "
                        "model.model.0.weight)")
    wanted = dict(found, ngf=found["ngf"] if ngf is None else ngf)
    if n_blocks is not None and found["netG"].startswith("resnet"):
        wanted["netG"] = f"resnet_{n_blocks}blocks"
    G = make_generator(**wanted)
    state = without_stale_norm_statistics(state)
    problem = _first_mismatch(G.state_dict(), state)
    layout = other_layout(state)
    if problem and layout:
        raise UserError(f"{path}: holds a generator in another layout ({'; '.join(layout)}); "
                        "test.py reads the authors' layout (residual blocks under "
                        "model.N.conv_block), which train.py writes")
    if problem:
        raise UserError(f"{path}: does not fit {describe_generator(wanted)}; it holds "
                        f"{describe_generator(found)} ({problem})")
    G.load_state_dict(state, strict=True)
    return G.to(device).eval()


def describe_generator(spec):
    blocks = spec["netG"].removeprefix("resnet_").removesuffix("blocks")
    name = f"--n_blocks {blocks}" if blocks.isdigit() else f"--netG {spec['netG']}"
    return f"a generator of --ngf {spec['ngf']} {name}"


def architecture(state):
    """make_generator's arguments for a generator state_dict in the authors' layout (a ResNet
    or a U-Net, in any channel counts and norm), or None. A U-Net's levels are its 4-D
    weights, one convolution down and one up each; batch norm leaves 1-D weights, and only
    instance norm gives the first convolution a bias."""
    try:
        unet = "model.model.0.weight" in state
        prefix = "model.model." if unet else "model."
        first = state[prefix + "0.weight" if unet else prefix + "1.weight"]
        if unet:
            levels = sum(getattr(t, "ndim", 0) == 4 for t in state.values()) // 2
            netG, out_ch = f"unet_{2 ** levels}", state["model.model.3.weight"].shape[1]
        else:
            blocks = sum(key.endswith("conv_block.1.weight") for key in state)
            last = max((key for key in state if re.fullmatch(r"model\.\d+\.weight", key)),
                       key=lambda key: int(key.split(".")[1]))
            netG, out_ch = f"resnet_{blocks}blocks", state[last].shape[0]
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        return None
    batch = any(key.endswith("running_var") and key.removesuffix("running_var") + "weight"
                in state for key in state)
    biased = (prefix + ("0.bias" if unet else "1.bias")) in state
    norm = "batch" if batch else "instance" if biased else "none"
    return {"netG": netG, "in_ch": first.shape[1], "out_ch": out_ch, "ngf": first.shape[0],
            "norm": norm}


def without_stale_norm_statistics(state):
    """`state` without the running statistics that the authors' releases before 2019 kept for
    InstanceNorm layers (no affine weight beside them), which their loader drops too."""
    stale = {key for key in state if key.endswith(("running_mean", "running_var",
                                                   "num_batches_tracked"))
             and key.rsplit(".", 1)[0] + ".weight" not in state}
    return {key: value for key, value in state.items() if key not in stale}


def other_layout(state):
    """How a generator state_dict departs from the authors' layout, as other CycleGAN code
    saves it: residual blocks named otherwise, or norm layers with weights of their own."""
    parts = [key.split(".") for key in state]
    blocks = sorted({".".join(p[:3]) for p in parts
                     if len(p) == 5 and p[0] == "model" and p[2] != "conv_block"})
    norms = [key for key in state
             if key.endswith(".weight") and getattr(state[key], "ndim", 0) == 1]
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
