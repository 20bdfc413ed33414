"""A transcription of the authors' CycleGANModel.optimize_parameters, kept in their structure:
a GANLoss with target tensors, separate backward passes, python's random in the pool, Adam
with its defaults. Their netG_A is our G_A2B, and their netD_A judges domain B, so it is our D_B.

test_step.py pins our step to it; run as a script it times it as a baseline, beside
benchmark.py:

    python tests/authors.py --size 128 --iters 5 [--device cuda]
"""
import copy
import functools
import itertools
import os
import random
import sys

import torch
from torch import nn

# Their networks.py: the norm-layer makers, the bias rule and the four networks, in their
# structure (their UnetSkipConnectionBlock built from the innermost level out).

class Identity(nn.Module):
    def forward(self, x):
        return x


def their_norm_layer(norm_type):
    if norm_type == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)

    def no_norm(channels):
        return Identity()
    return no_norm


def their_use_bias(norm_layer):
    if isinstance(norm_layer, functools.partial):
        return norm_layer.func == nn.InstanceNorm2d
    return norm_layer == nn.InstanceNorm2d


class TheirResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, use_bias):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class TheirResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf, norm_layer, n_blocks):
        super().__init__()
        use_bias = their_use_bias(norm_layer)
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, bias=use_bias),
                 norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1,
                                bias=use_bias), norm_layer(ngf * mult * 2), nn.ReLU(True)]
        model += [TheirResnetBlock(ngf * 4, norm_layer, use_bias) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2,
                                         padding=1, output_padding=1, bias=use_bias),
                      norm_layer(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class TheirUnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
                 innermost=False, norm_layer=None):
        super().__init__()
        self.outermost = outermost
        use_bias = their_use_bias(norm_layer)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1,
                             bias=use_bias)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1,
                                        bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv,
                     norm_layer(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2,
                                        padding=1, bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, norm_layer(inner_nc), submodule,
                     nn.ReLU(True), upconv, norm_layer(outer_nc)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class TheirUnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf, norm_layer):
        super().__init__()
        block = TheirUnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True,
                                             norm_layer=norm_layer)
        for _ in range(num_downs - 5):
            block = TheirUnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block,
                                                 norm_layer=norm_layer)
        for outer in (ngf * 4, ngf * 2, ngf):
            block = TheirUnetSkipConnectionBlock(outer, outer * 2, submodule=block,
                                                 norm_layer=norm_layer)
        self.model = TheirUnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc,
                                                  submodule=block, outermost=True,
                                                  norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)


class TheirNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf, n_layers, norm_layer):
        super().__init__()
        use_bias = their_use_bias(norm_layer)
        sequence = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
                    nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            previous, mult = mult, min(2 ** n, 8)
            sequence += [nn.Conv2d(ndf * previous, ndf * mult, kernel_size=4,
                                   stride=2 if n < n_layers else 1, padding=1, bias=use_bias),
                         norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
        sequence += [nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*sequence)

    def forward(self, x):
        return self.model(x)


class TheirPixelDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf, norm_layer):
        super().__init__()
        use_bias = their_use_bias(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=use_bias), norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=use_bias))

    def forward(self, x):
        return self.net(x)


def their_generator(netG, input_nc=3, output_nc=3, ngf=64, norm="instance"):
    norm_layer = their_norm_layer(norm)
    if netG.startswith("resnet"):
        return TheirResnetGenerator(input_nc, output_nc, ngf, norm_layer,
                                    int(netG.split("_")[1].removesuffix("blocks")))
    return TheirUnetGenerator(input_nc, output_nc, {"unet_128": 7, "unet_256": 8}[netG], ngf,
                              norm_layer)


def their_discriminator(netD, input_nc=3, ndf=64, n_layers_D=3, norm="instance"):
    norm_layer = their_norm_layer(norm)
    if netD == "pixel":
        return TheirPixelDiscriminator(input_nc, ndf, norm_layer)
    return TheirNLayerDiscriminator(input_nc, ndf, 3 if netD == "basic" else n_layers_D,
                                    norm_layer)


class AuthorsGANLoss(nn.Module):
    def __init__(self, gan_mode="lsgan"):
        super().__init__()
        self.register_buffer("real_label", torch.tensor(1.0))
        self.register_buffer("fake_label", torch.tensor(0.0))
        self.gan_mode = gan_mode
        self.loss = nn.MSELoss() if gan_mode == "lsgan" else nn.BCEWithLogitsLoss()

    def __call__(self, prediction, target_is_real):
        if self.gan_mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        target = (self.real_label if target_is_real else self.fake_label).expand_as(prediction)
        return self.loss(prediction, target)


class AuthorsPool:
    def __init__(self, pool_size, rng):
        self.pool_size, self.num_imgs, self.images, self.rng = pool_size, 0, [], rng

    def query(self, images):
        if self.pool_size == 0:
            return images
        return_images = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if self.num_imgs < self.pool_size:
                self.num_imgs += 1
                self.images.append(image)
                return_images.append(image)
            else:
                p = self.rng.uniform(0, 1)
                if p > 0.5:
                    random_id = self.rng.randint(0, self.pool_size - 1)
                    tmp = self.images[random_id].clone()
                    self.images[random_id] = image
                    return_images.append(tmp)
                else:
                    return_images.append(image)
        return torch.cat(return_images, 0)


class AuthorsCycleGAN:
    def __init__(self, ours, lambda_A=10.0, lambda_B=10.0, lambda_idt=0.5, pool_size=2, seed=0,
                 beta1=0.5, gan_mode="lsgan"):
        self.netG_A, self.netG_B = copy.deepcopy(ours.G_A2B), copy.deepcopy(ours.G_B2A)
        self.netD_A, self.netD_B = copy.deepcopy(ours.D_B), copy.deepcopy(ours.D_A)
        for net in (self.netG_A, self.netG_B, self.netD_A, self.netD_B):
            for module in net.modules():  # their ReLU(True) and LeakyReLU(0.2, True)
                if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
                    module.inplace = True
        self.lambda_A, self.lambda_B, self.lambda_idt = lambda_A, lambda_B, lambda_idt
        self.fake_A_pool = AuthorsPool(pool_size, random.Random(2 * seed))
        self.fake_B_pool = AuthorsPool(pool_size, random.Random(2 * seed + 1))
        device = next(ours.G_A2B.parameters()).device
        self.criterionGAN = AuthorsGANLoss(gan_mode).to(device)
        self.criterionCycle, self.criterionIdt = nn.L1Loss(), nn.L1Loss()
        self.optimizer_G = torch.optim.Adam(itertools.chain(self.netG_A.parameters(),
                                                            self.netG_B.parameters()),
                                            lr=2e-4, betas=(beta1, 0.999))
        self.optimizer_D = torch.optim.Adam(itertools.chain(self.netD_A.parameters(),
                                                            self.netD_B.parameters()),
                                            lr=2e-4, betas=(beta1, 0.999))

    def set_requires_grad(self, nets, requires_grad):
        for net in nets:
            for param in net.parameters():
                param.requires_grad = requires_grad

    def backward_D_basic(self, netD, real, fake):
        loss_D = (self.criterionGAN(netD(real), True)
                  + self.criterionGAN(netD(fake.detach()), False)) * 0.5
        loss_D.backward()
        return loss_D

    def optimize_parameters(self, real_A, real_B):
        self.real_A, self.real_B = real_A, real_B
        self.fake_B = self.netG_A(self.real_A)
        self.rec_A = self.netG_B(self.fake_B)
        self.fake_A = self.netG_B(self.real_B)
        self.rec_B = self.netG_A(self.fake_A)
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        if self.lambda_idt > 0:
            self.idt_A = self.netG_A(self.real_B)
            self.loss_idt_A = (self.criterionIdt(self.idt_A, self.real_B)
                               * self.lambda_B * self.lambda_idt)
            self.idt_B = self.netG_B(self.real_A)
            self.loss_idt_B = (self.criterionIdt(self.idt_B, self.real_A)
                               * self.lambda_A * self.lambda_idt)
        else:
            self.loss_idt_A, self.loss_idt_B = 0, 0
        self.loss_G_A = self.criterionGAN(self.netD_A(self.fake_B), True)
        self.loss_G_B = self.criterionGAN(self.netD_B(self.fake_A), True)
        self.loss_cycle_A = self.criterionCycle(self.rec_A, self.real_A) * self.lambda_A
        self.loss_cycle_B = self.criterionCycle(self.rec_B, self.real_B) * self.lambda_B
        self.loss_G = (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
                       + self.loss_idt_A + self.loss_idt_B)
        self.loss_G.backward()
        self.optimizer_G.step()
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B,
                                              self.fake_B_pool.query(self.fake_B))
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A,
                                              self.fake_A_pool.query(self.fake_A))
        self.optimizer_D.step()


def main():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmark import check_args, summary, timed
    from cyclegan import CycleGAN
    from utils import ArgumentParser, UserError, fail, pick_device
    p = ArgumentParser(description="Time the authors' training step (fp32, as theirs) "
                                   "on synthetic images.")
    for name, default in (("size", 128), ("batch_size", 1), ("warmup", 2), ("iters", 10)):
        p.add_argument(f"--{name}", type=int, default=default,
                       help=f"as benchmark.py (default: {default})")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    args = p.parse_args()
    try:
        check_args(args)
        device = pick_device(args.device)
    except UserError as e:
        fail(f"authors.py: error: {e}")
    torch.backends.cudnn.benchmark = True  # as their BaseModel does for fixed-size crops
    ours = CycleGAN(device=device)
    theirs = AuthorsCycleGAN(ours, pool_size=50)
    g = torch.Generator().manual_seed(0)
    real_A, real_B = (torch.rand(args.batch_size, 3, args.size, args.size, generator=g).to(device)
                      * 2 - 1 for _ in "AB")
    times = summary(timed(lambda: theirs.optimize_parameters(real_A, real_B), device, args.warmup,
                          args.iters))
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu ({torch.get_num_threads()} threads)")
    print(f"authors' step, {where}, size {args.size}, batch {args.batch_size}: "
          f"{times['median']:.4f} s/iteration median "
          f"(min {times['min']:.4f}, max {times['max']:.4f}, n {times['n']})")


if __name__ == "__main__":
    main()
