"""The CycleGAN model (Zhu et al. 2017): two generators, two discriminators, the paper's
losses and one optimisation step, usable without train.py's command line.

    model = CycleGAN(device="cuda")
    losses = model.step(real_A, real_B)  # Losses of tensors on the device
    print(losses.floats())               # waits for the device

G_A2B translates domain A to B and G_B2A back; D_A judges domain-A images, D_B domain-B
ones. The generators minimise, in this order (section 3 and 5.2 of the paper):
  loss_G_GAN      D_B(G_A2B(a)) and D_A(G_B2A(b)) against 1 (LSGAN, or --gan_mode's loss)
  loss_G_cycle    lambda_A * |G_B2A(G_A2B(a)) - a| + lambda_B * |G_A2B(G_B2A(b)) - b|
  loss_G_identity lambda_identity * (lambda_B * |G_A2B(b) - b| + lambda_A * |G_B2A(a) - a|)
(lambda_A and lambda_B are both lambda_cycle unless given, as the authors name them)
then the discriminators minimise loss_D, on real images against 1 and on generated ones,
drawn from a replay buffer of pool_size images, against 0, halved.

The networks are the paper's unless `networks` names others, as the authors' options do
(models.cyclegan_networks).
"""
import typing

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models import cyclegan_networks
from utils import ImagePool, amp_dtype


class Losses(typing.NamedTuple):
    """The losses of one step, in the columns of losses.csv: the generators' total and its
    three terms, and the discriminators' total."""
    loss_G: torch.Tensor
    loss_G_GAN: torch.Tensor
    loss_G_cycle: torch.Tensor
    loss_G_identity: torch.Tensor
    loss_D: torch.Tensor

    def floats(self):
        """{name: value} as Python floats; waits for the device."""
        return dict(zip(self._fields, torch.stack(self).tolist()))


LOSS_NAMES = Losses._fields
GAN_MODES = ("lsgan", "vanilla", "wgangp")


def gan_loss(prediction, is_real, mode="lsgan"):
    """The authors' GAN objectives for a map of patch scores, each against a target of 1
    (real) or 0 (fake): least squares (LSGAN, the paper's), cross-entropy on logits
    (vanilla), or the Wasserstein critic's mean, negated for real (wgangp; their CycleGAN
    adds no gradient penalty to it, nor does this). A multi-scale discriminator's maps give
    the mean of their losses."""
    if isinstance(prediction, list):
        return sum(gan_loss(p, is_real, mode) for p in prediction) / len(prediction)
    prediction = prediction.float()
    if mode == "wgangp":
        return -prediction.mean() if is_real else prediction.mean()
    target = torch.ones_like(prediction) if is_real else torch.zeros_like(prediction)
    if mode == "vanilla":
        return nn.functional.binary_cross_entropy_with_logits(prediction, target)
    return nn.functional.mse_loss(prediction, target)


def l1(x, y):
    return nn.functional.l1_loss(x.float(), y.float())


def batched(net, *inputs, together=True):
    """net applied to each input, in one call on their concatenation. InstanceNorm normalises
    each image on its own, so this gives the outputs and gradients of separate calls (to
    float rounding) with fewer, larger kernels. Inputs of different sizes (train.py
    --preprocess none or scale_width) go through one call each, as all do without
    `together` (batch norm's statistics would mix the inputs). A multi-scale
    discriminator's list of maps is split map by map."""
    if not together or len({x.shape[1:] for x in inputs}) > 1:
        return tuple(net(x) for x in inputs)
    outputs = net(torch.cat(inputs)) if len(inputs) > 1 else net(inputs[0])
    sizes = [len(x) for x in inputs]
    if isinstance(outputs, list):
        return tuple(map(list, zip(*(o.split(sizes) for o in outputs))))
    return outputs.split(sizes)


def adam(nets, lr, beta1=0.5):
    """The paper's Adam (betas 0.5, 0.999; the first is the authors' --beta1) over the
    networks' parameters. Fused where torch has a fused kernel for the device: it updates all
    parameters in one pass, where the default per-tensor loop took as long as a tenth of a
    128x128 iteration on a CPU (docs/benchmarks.md); torch older than 2.5 has none for MPS,
    and refuses."""
    parameters = [p for net in nets for p in net.parameters()]
    try:
        return torch.optim.Adam(parameters, lr=lr, betas=(beta1, 0.999), fused=True)
    except RuntimeError:
        return torch.optim.Adam(parameters, lr=lr, betas=(beta1, 0.999))


def _set_requires_grad(nets, flag):
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class CycleGAN:
    """The two generators (G_A2B, G_B2A), the two discriminators (D_A judges domain-A images,
    D_B domain-B images), their two Adam optimisers and the two replay buffers."""

    def __init__(self, *, device="cpu", ngf=64, ndf=64, n_blocks=9, networks=None,
                 gan_mode="lsgan", lr=2e-4, beta1=0.5, lambda_cycle=10.0, lambda_A=None,
                 lambda_B=None, lambda_identity=0.5, pool_size=50, seed=0, amp=False,
                 channels_last=False, rank=0):
        self.device = torch.device(device)
        self.lambda_A = lambda_cycle if lambda_A is None else lambda_A
        self.lambda_B = lambda_cycle if lambda_B is None else lambda_B
        self.lambda_identity, self.gan_mode = lambda_identity, gan_mode
        self.amp_dtype = amp_dtype(self.device) if amp else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # `networks`: models.cyclegan_networks' options beyond ngf and ndf (netG, norm, ...)
        networks = {"netG": f"resnet_{n_blocks}blocks", **(networks or {})}
        # Batch norm's statistics would mix inputs given to a network together.
        self.together = networks.get("norm") != "batch"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.G_A2B, self.G_B2A, self.D_A, self.D_B = cyclegan_networks(ngf=ngf, ndf=ndf,
                                                                           **networks)
        for net in self.networks().values():
            net.to(self.device, memory_format=self.memory_format)
        self.opt_G = adam([self.G_A2B, self.G_B2A], lr, beta1)
        self.opt_D = adam([self.D_A, self.D_B], lr, beta1)
        # fp16 gradients need scaling against underflow; bf16 and fp32 ones do not.
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        # Each torchrun process keeps its own buffers, with its own random stream.
        self.pool_A = ImagePool(pool_size, seed=2 * seed + 1_000_003 * rank)  # fake A, for D_A
        self.pool_B = ImagePool(pool_size, seed=2 * seed + 1 + 1_000_003 * rank)  # fake B, for D_B
        self.trained = self.networks()  # the networks that get gradients; wrapped by `distribute`
        self.visuals, self.graphs = {}, False

    def autocast(self):
        """Mixed precision for the networks when amp is on; the losses are taken in fp32."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype,
                              enabled=self.amp_dtype is not None)

    def step(self, real_A, real_B):
        """One optimisation step of the generators, then of the discriminators, on a batch
        from each domain. The Losses stay on the device, so that a GPU can run ahead until
        someone reads them."""
        if self.graphs:
            # A new step: CUDA graphs may reuse the memory of the last step's outputs. Those
            # kept across steps are copies (the replay buffers), or read before the next step
            # (the losses, `visuals`).
            torch.compiler.cudagraph_mark_step_begin()
        real_A = real_A.to(self.device, non_blocking=True, memory_format=self.memory_format)
        real_B = real_B.to(self.device, non_blocking=True, memory_format=self.memory_format)
        with self.autocast():
            fake_B, fake_A, rec_A, rec_B, idt_B, idt_A = self._generate(real_A, real_B)
            # The discriminators are frozen here and called unwrapped: their gradient is not
            # wanted, and a DistributedDataParallel wrapper would wait for it.
            _set_requires_grad((self.D_A, self.D_B), False)
            loss_G_GAN = (gan_loss(self.D_B(fake_B), True, self.gan_mode)
                          + gan_loss(self.D_A(fake_A), True, self.gan_mode))
            loss_G_cycle = self.lambda_A * l1(rec_A, real_A) + self.lambda_B * l1(rec_B, real_B)
            loss_G_identity = torch.zeros((), device=self.device)
            if self.lambda_identity > 0:
                loss_G_identity = self.lambda_identity * (self.lambda_B * l1(idt_B, real_B)
                                                          + self.lambda_A * l1(idt_A, real_A))
            loss_G = loss_G_GAN + loss_G_cycle + loss_G_identity
        self._optimise(self.opt_G, loss_G)

        _set_requires_grad((self.D_A, self.D_B), True)
        with self.autocast():
            loss_D = (self._discriminator_loss("D_A", real_A, self.pool_A.query(fake_A))
                      + self._discriminator_loss("D_B", real_B, self.pool_B.query(fake_B)))
        self._optimise(self.opt_D, loss_D)
        self.scaler.update()

        self.visuals = {"real_A": real_A, "fake_B": fake_B.detach(), "rec_A": rec_A.detach(),
                        "real_B": real_B, "fake_A": fake_A.detach(), "rec_B": rec_B.detach()}
        losses = Losses(loss_G, loss_G_GAN, loss_G_cycle, loss_G_identity, loss_D)
        return Losses(*(loss.detach() for loss in losses))

    def _generate(self, real_A, real_B):
        """fake_B, fake_A, the reconstructions rec_A and rec_B, and, with the identity loss,
        idt_B = G_A2B(real_B) and idt_A = G_B2A(real_A) (Taigman et al.: a generator should
        leave an image of its target domain unchanged), else None for both. Passes through
        the same generator share one call, except under batch norm."""
        G_A2B, G_B2A = self.trained["G_A2B"], self.trained["G_B2A"]
        if not self.together:
            # One input per call, in the authors' order: batch norm's running statistics
            # depend on it.
            fake_B = G_A2B(real_A)
            rec_A, fake_A = G_B2A(fake_B), G_B2A(real_B)
            rec_B = G_A2B(fake_A)
            identity = self.lambda_identity > 0
            idt_B, idt_A = (G_A2B(real_B), G_B2A(real_A)) if identity else (None, None)
            return fake_B, fake_A, rec_A, rec_B, idt_B, idt_A
        if self.lambda_identity > 0:
            fake_B, idt_B = batched(G_A2B, real_A, real_B)
            fake_A, rec_A, idt_A = batched(G_B2A, real_B, fake_B, real_A)
        else:
            fake_B, idt_B = G_A2B(real_A), None
            fake_A, rec_A = batched(G_B2A, real_B, fake_B)
            idt_A = None
        rec_B = G_A2B(fake_A)
        return fake_B, fake_A, rec_A, rec_B, idt_B, idt_A

    def _discriminator_loss(self, name, real, fake):
        # Halved so that D learns at half the rate of G, as in the paper.
        on_real, on_fake = batched(self.trained[name], real, fake.detach(),
                                   together=self.together)
        return 0.5 * (gan_loss(on_real, True, self.gan_mode)
                      + gan_loss(on_fake, False, self.gan_mode))

    def _optimise(self, optimizer, loss):
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)

    def compile(self, mode="default"):
        """torch.compile the four networks in place (their state_dict keys stay the same).
        The first iterations then take minutes to compile; see README, Speed. In mode
        "reduce-overhead" each network's forward and backward replay as CUDA graphs: one launch
        instead of hundreds of kernel launches."""
        for net in self.networks().values():
            net.compile(mode=mode)
        self.graphs = mode == "reduce-overhead" and self.device.type == "cuda"

    def distribute(self):
        """Average gradients over the torchrun processes with DistributedDataParallel (which
        also copies rank 0's weights to all). The plain networks stay the ones saved, so the
        state_dict keys do not change."""
        devices = [self.device] if self.device.type == "cuda" else None
        self.trained = {name: DistributedDataParallel(net, device_ids=devices)
                        for name, net in self.networks().items()}

    def set_lr(self, lr):
        for group in self.opt_G.param_groups + self.opt_D.param_groups:
            group["lr"] = lr

    def networks(self):
        return {"G_A2B": self.G_A2B, "G_B2A": self.G_B2A, "D_A": self.D_A, "D_B": self.D_B}

    def state_dict(self):
        state = {name: net.state_dict() for name, net in self.networks().items()}
        state.update(opt_G=self.opt_G.state_dict(), opt_D=self.opt_D.state_dict(),
                     scaler=self.scaler.state_dict(), pool_A=self.pool_A.state_dict(),
                     pool_B=self.pool_B.state_dict())
        return state

    def load_state_dict(self, state):
        for name, net in self.networks().items():
            net.load_state_dict(state[name])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if state.get("scaler"):  # empty unless the run used fp16
            self.scaler.load_state_dict(state["scaler"])
        for name, pool in (("pool_A", self.pool_A), ("pool_B", self.pool_B)):
            if name not in state:  # a torchrun process other than rank 0 starts with empty buffers
                continue
            pool_state = dict(state[name])
            pool_state["images"] = [im.to(self.device) for im in pool_state["images"]]
            pool.load_state_dict(pool_state)
