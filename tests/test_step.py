"""The training step, the replay buffer and the learning-rate schedule, against hand-checked
values and against a transcription of the authors' optimize_parameters."""
import copy
import itertools
import math
import random

import pytest
import torch
from torch import nn

from train import CycleGAN
from utils import ImagePool, linear_decay

SMALL = dict(device="cpu", ngf=4, ndf=4, n_blocks=1)


def constant_output(net, value):
    """Zero every weight and set the last bias: the network then outputs `value` everywhere
    (instance norm of an all-zero map is zero)."""
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.model[-1 if isinstance(net.model[-1], nn.Conv2d) else -2].bias.fill_(value)


def test_losses_equal_the_hand_computed_values_of_the_paper_objective():
    model = CycleGAN(**SMALL, pool_size=0)
    for G in (model.G_A2B, model.G_B2A):
        constant_output(G, 0.0)  # tanh(0) = 0: every generated image is 0
    constant_output(model.D_A, 0.2)
    constant_output(model.D_B, 0.6)
    real_A, real_B = torch.full((1, 3, 32, 32), 0.5), torch.full((1, 3, 32, 32), -0.5)

    losses = model.step(real_A, real_B)

    # GAN: (D_B(fake_B) - 1)^2 + (D_A(fake_A) - 1)^2 = 0.16 + 0.64
    assert losses["loss_G_GAN"] == pytest.approx(0.8, abs=1e-6)
    # cycle: 10 * (|0 - 0.5| + |0 - (-0.5)|)
    assert losses["loss_G_cycle"] == pytest.approx(10.0, abs=1e-6)
    # identity: 10 * 0.5 * (|G_A2B(B) - B| + |G_B2A(A) - A|) = 5 * (0.5 + 0.5)
    assert losses["loss_G_identity"] == pytest.approx(5.0, abs=1e-6)
    assert losses["loss_G"] == pytest.approx(15.8, abs=1e-5)
    # D_A: 0.5 * ((0.2 - 1)^2 + 0.2^2); D_B: 0.5 * ((0.6 - 1)^2 + 0.6^2)
    assert losses["loss_D"] == pytest.approx(0.34 + 0.26, abs=1e-6)


def test_identity_loss_is_skipped_when_lambda_identity_is_zero():
    model = CycleGAN(**SMALL, lambda_identity=0.0)
    losses = model.step(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert losses["loss_G_identity"] == 0.0
    assert losses["loss_G"] == pytest.approx(losses["loss_G_GAN"] + losses["loss_G_cycle"], rel=1e-6)


def test_step_returns_python_floats_for_every_loss():
    losses = CycleGAN(**SMALL).step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert set(losses) == {"loss_G", "loss_G_GAN", "loss_G_cycle", "loss_G_identity", "loss_D"}
    assert all(type(v) is float and math.isfinite(v) for v in losses.values())


def test_same_seed_builds_the_same_networks_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = CycleGAN(**SMALL, seed=7), CycleGAN(**SMALL, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    for name in ("G_A2B", "G_B2A", "D_A", "D_B"):
        for p, q in zip(getattr(a, name).parameters(), getattr(b, name).parameters()):
            assert torch.equal(p, q)
    assert not torch.equal(a.G_A2B.model[1].weight, CycleGAN(**SMALL, seed=8).G_A2B.model[1].weight)


# A transcription of the authors' CycleGANModel.optimize_parameters (their netG_A is our
# G_A2B, their netD_A judges domain B, so it is our D_B), kept in their structure: a
# GANLoss with target tensors, separate backward passes, python's random in the pool.
class AuthorsGANLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("real_label", torch.tensor(1.0))
        self.register_buffer("fake_label", torch.tensor(0.0))
        self.loss = nn.MSELoss()

    def __call__(self, prediction, target_is_real):
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
    def __init__(self, ours, lambda_A=10.0, lambda_B=10.0, lambda_idt=0.5, pool_size=2, seed=0):
        self.netG_A, self.netG_B = copy.deepcopy(ours.G_A2B), copy.deepcopy(ours.G_B2A)
        self.netD_A, self.netD_B = copy.deepcopy(ours.D_B), copy.deepcopy(ours.D_A)
        self.lambda_A, self.lambda_B, self.lambda_idt = lambda_A, lambda_B, lambda_idt
        self.fake_A_pool = AuthorsPool(pool_size, random.Random(2 * seed))
        self.fake_B_pool = AuthorsPool(pool_size, random.Random(2 * seed + 1))
        self.criterionGAN, self.criterionCycle, self.criterionIdt = AuthorsGANLoss(), nn.L1Loss(), nn.L1Loss()
        self.optimizer_G = torch.optim.Adam(itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()),
                                            lr=2e-4, betas=(0.5, 0.999))
        self.optimizer_D = torch.optim.Adam(itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()),
                                            lr=2e-4, betas=(0.5, 0.999))

    def set_requires_grad(self, nets, requires_grad):
        for net in nets:
            for param in net.parameters():
                param.requires_grad = requires_grad

    def backward_D_basic(self, netD, real, fake):
        loss_D = (self.criterionGAN(netD(real), True) + self.criterionGAN(netD(fake.detach()), False)) * 0.5
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
        self.idt_A = self.netG_A(self.real_B)
        self.loss_idt_A = self.criterionIdt(self.idt_A, self.real_B) * self.lambda_B * self.lambda_idt
        self.idt_B = self.netG_B(self.real_A)
        self.loss_idt_B = self.criterionIdt(self.idt_B, self.real_A) * self.lambda_A * self.lambda_idt
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
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B, self.fake_B_pool.query(self.fake_B))
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A, self.fake_A_pool.query(self.fake_A))
        self.optimizer_D.step()


def test_three_steps_match_the_authors_algorithm_to_float32_rounding():
    ours = CycleGAN(**SMALL, pool_size=2, seed=3)
    theirs = AuthorsCycleGAN(ours, pool_size=2, seed=3)
    batches = torch.Generator().manual_seed(0)
    for _ in range(3):  # the buffer fills in steps 1-2; step 3 swaps or passes at random
        real_A = torch.rand(1, 3, 32, 32, generator=batches) * 2 - 1
        real_B = torch.rand(1, 3, 32, 32, generator=batches) * 2 - 1
        losses = ours.step(real_A, real_B)
        theirs.optimize_parameters(real_A, real_B)
        assert losses["loss_G"] == pytest.approx(theirs.loss_G.item(), rel=1e-5)
        assert losses["loss_G_GAN"] == pytest.approx((theirs.loss_G_A + theirs.loss_G_B).item(), rel=1e-5)
        assert losses["loss_G_cycle"] == pytest.approx((theirs.loss_cycle_A + theirs.loss_cycle_B).item(), rel=1e-5)
        assert losses["loss_G_identity"] == pytest.approx((theirs.loss_idt_A + theirs.loss_idt_B).item(), rel=1e-5)
        assert losses["loss_D"] == pytest.approx((theirs.loss_D_A + theirs.loss_D_B).item(), rel=1e-5)
    pairs = [(ours.G_A2B, theirs.netG_A), (ours.G_B2A, theirs.netG_B), (ours.D_B, theirs.netD_A), (ours.D_A, theirs.netD_B)]
    for mine, authors in pairs:
        for p, q in zip(mine.parameters(), authors.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours.G_A2B.model[1].weight, CycleGAN(**SMALL, seed=3).G_A2B.model[1].weight)


def images(n, value=None):
    return torch.full((n, 3, 2, 2), float(value)) if value is not None else torch.rand(n, 3, 2, 2)


def test_pool_returns_and_stores_new_images_until_it_holds_pool_size():
    pool = ImagePool(3)
    batch = images(2)
    assert torch.equal(pool.query(batch), batch)
    assert torch.equal(pool.query(images(1, 7)), images(1, 7))
    assert len(pool.images) == 3


def test_full_pool_returns_a_stored_image_about_half_the_time_and_keeps_the_new_one():
    pool = ImagePool(5, seed=1)
    for i in range(5):
        pool.query(images(1, i))
    returned_old = 0
    for i in range(5, 1005):
        out = pool.query(images(1, i))
        if out[0, 0, 0, 0].item() != i:
            returned_old += 1
            assert any(im[0, 0, 0, 0].item() == i for im in pool.images)
        assert len(pool.images) == 5
    assert 430 < returned_old < 570


def test_pool_decides_per_image_in_a_batch():
    pool = ImagePool(1, seed=0)
    pool.query(images(1, -1))
    out = pool.query(torch.cat([images(1, v) for v in range(40)]))
    kept_new = sum(out[i, 0, 0, 0].item() == i for i in range(40))
    assert 0 < kept_new < 40


def test_pool_size_zero_disables_the_buffer():
    pool = ImagePool(0)
    batch = images(4)
    assert pool.query(batch) is batch
    assert pool.images == []


def test_pool_state_round_trip_gives_the_same_future_choices():
    a = ImagePool(2, seed=5)
    for i in range(4):
        a.query(images(1, i))
    b = ImagePool(2, seed=99)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for i in range(4, 20):
        assert torch.equal(a.query(images(1, i)), b.query(images(1, i)))


@pytest.mark.parametrize("epoch,factor", [(0, 1.0), (99, 1.0), (100, 100 / 101), (150, 50 / 101), (199, 1 / 101)])
def test_lr_is_constant_for_decay_epoch_epochs_then_falls_linearly_towards_zero_at_n_epochs(epoch, factor):
    assert linear_decay(epoch, n_epochs=200, decay_epoch=100) == pytest.approx(factor)


def test_lr_stays_constant_when_decay_epoch_equals_n_epochs():
    assert [linear_decay(e, 5, 5) for e in range(5)] == [1.0] * 5


def test_set_lr_changes_both_optimisers():
    model = CycleGAN(**SMALL)
    model.set_lr(1e-5)
    assert [g["lr"] for g in model.opt_G.param_groups + model.opt_D.param_groups] == [1e-5, 1e-5]
