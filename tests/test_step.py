"""The training step, the replay buffer and the learning-rate schedule, against hand-checked
values and against a transcription of the authors' optimize_parameters."""
import copy
import math

import pytest
import torch
from torch import nn

from authors import AuthorsCycleGAN
from models import Discriminator, Generator
from cyclegan import CycleGAN
from utils import ImagePool, lr_factor

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

    losses = model.step(real_A, real_B).floats()

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
    losses = model.step(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)).floats()
    assert losses["loss_G_identity"] == 0.0
    assert losses["loss_G"] == pytest.approx(losses["loss_G_GAN"] + losses["loss_G_cycle"],
                                             rel=1e-6)


def test_step_returns_every_loss_by_name_on_the_device_and_as_python_floats():
    losses = CycleGAN(**SMALL).step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert losses._fields == ("loss_G", "loss_G_GAN", "loss_G_cycle", "loss_G_identity", "loss_D")
    assert all(loss.shape == () and not loss.requires_grad for loss in losses)
    assert losses.floats() == {name: getattr(losses, name).item() for name in losses._fields}
    assert all(type(v) is float and math.isfinite(v) for v in losses.floats().values())


def test_same_seed_builds_the_same_networks_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = CycleGAN(**SMALL, seed=7), CycleGAN(**SMALL, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    for name in ("G_A2B", "G_B2A", "D_A", "D_B"):
        for p, q in zip(getattr(a, name).parameters(), getattr(b, name).parameters()):
            assert torch.equal(p, q)
    assert not torch.equal(a.G_A2B.model[1].weight, CycleGAN(**SMALL, seed=8).G_A2B.model[1].weight)


def biases_cancelled_by_instance_norm(net):
    """Biases of convolutions followed by an InstanceNorm, which subtracts them again. Their
    gradient is zero up to rounding noise, which Adam scales up to full steps, so they wander
    differently under any other order of float operations without changing any output."""
    names = {id(p): name for name, p in net.named_parameters()}
    return {names[id(conv.bias)]
            for seq in net.modules() if isinstance(seq, nn.Sequential)
            for conv, norm in zip(seq, list(seq)[1:])
            if isinstance(norm, nn.InstanceNorm2d) and getattr(conv, "bias", None) is not None}


def scalar(loss):
    """A loss of theirs as a float: 0 where they skip it."""
    return loss.item() if torch.is_tensor(loss) else float(loss)


def assert_steps_match(ours, theirs, size=32, channels=(3, 3), steps=3, atol=1e-6):
    """Steps of ours and of the authors' algorithm on the same random batches give the same
    losses (to float32 rounding), then the same weights (to `atol`; all but the biases
    cancelled by instance norm), batch-norm statistics and outputs."""
    batches = torch.Generator().manual_seed(0)
    for _ in range(steps):  # the buffer fills in steps 1-2; step 3 swaps or passes at random
        real_A, real_B = (torch.rand(1, c, size, size, generator=batches) * 2 - 1 for c in channels)
        losses = ours.step(real_A, real_B).floats()
        theirs.optimize_parameters(real_A, real_B)
        assert losses["loss_G"] == pytest.approx(theirs.loss_G.item(), rel=1e-5)
        assert losses["loss_G_GAN"] == pytest.approx(
            (theirs.loss_G_A + theirs.loss_G_B).item(), rel=1e-5)
        assert losses["loss_G_cycle"] == pytest.approx(
            (theirs.loss_cycle_A + theirs.loss_cycle_B).item(), rel=1e-5)
        assert losses["loss_G_identity"] == pytest.approx(
            scalar(theirs.loss_idt_A + theirs.loss_idt_B), rel=1e-5)
        assert losses["loss_D"] == pytest.approx(
            (theirs.loss_D_A + theirs.loss_D_B).item(), rel=1e-5)
    pairs = [(ours.G_A2B, theirs.netG_A, channels[0]), (ours.G_B2A, theirs.netG_B, channels[1]),
             (ours.D_B, theirs.netD_A, channels[1]), (ours.D_A, theirs.netD_B, channels[0])]
    for mine, authors, c in pairs:
        cancelled = biases_cancelled_by_instance_norm(mine)
        for (name, p), q in zip(mine.named_parameters(), authors.parameters()):
            if name not in cancelled:
                torch.testing.assert_close(p, q, rtol=1e-5, atol=atol)
        for b, a in zip(mine.buffers(), authors.buffers()):  # batch norm's statistics
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        probe = torch.rand(1, c, size, size, generator=batches) * 2 - 1
        torch.testing.assert_close(mine(probe), authors(probe), rtol=1e-5, atol=1e-5 + atol * 10)


@pytest.mark.parametrize("lambda_identity, lambda_A, lambda_B, beta1", [
    (0.5, 10.0, 10.0, 0.5), (0.0, 10.0, 10.0, 0.5),
    (0.5, 10.0, 4.0, 0.9),  # the authors' --lambda_A, --lambda_B and --beta1
])
def test_three_steps_match_the_authors_algorithm_to_float32_rounding(lambda_identity, lambda_A,
                                                                    lambda_B, beta1):
    ours = CycleGAN(**SMALL, pool_size=2, seed=3, lambda_identity=lambda_identity,
                    lambda_A=lambda_A, lambda_B=lambda_B, beta1=beta1)
    theirs = AuthorsCycleGAN(ours, pool_size=2, seed=3, lambda_idt=lambda_identity,
                             lambda_A=lambda_A, lambda_B=lambda_B, beta1=beta1)
    assert_steps_match(ours, theirs)
    assert not torch.equal(ours.G_A2B.model[1].weight,
                           CycleGAN(**SMALL, seed=3).G_A2B.model[1].weight)


@pytest.mark.parametrize("networks, gan_mode, lambda_identity", [
    ({"norm": "batch"}, "lsgan", 0.5),
    ({"norm": "none", "init_type": "xavier"}, "vanilla", 0.5),
    ({"netD": "pixel", "init_type": "kaiming"}, "wgangp", 0.5),
    ({"netD": "n_layers", "n_layers_D": 2, "init_type": "orthogonal", "init_gain": 0.5}, "lsgan",
     0.5),
    ({"netG": "resnet_6blocks", "input_nc": 1, "output_nc": 3}, "lsgan", 0.0),
    ({"netG": "unet_128", "norm": "batch"}, "vanilla", 0.5),
], ids=["batch-norm", "no-norm-vanilla", "pixel-wgangp", "n-layers", "1-to-3-channels",
        "unet-batch-norm"])
def test_three_steps_with_the_authors_other_networks_and_losses_match_theirs(
        networks, gan_mode, lambda_identity):
    ours = CycleGAN(device="cpu", ngf=4, ndf=4, networks=networks, gan_mode=gan_mode,
                    pool_size=2, seed=3, lambda_identity=lambda_identity)
    theirs = AuthorsCycleGAN(ours, pool_size=2, seed=3, lambda_idt=lambda_identity,
                             gan_mode=gan_mode)
    size = 128 if networks.get("netG") == "unet_128" else 32
    # Larger initial weights amplify the rounding apart of batched and separate calls: a
    # near-zero gradient of the other sign is a full Adam step (2e-4) the other way. Two
    # steps: the second's losses already come from the weights the first made.
    assert_steps_match(ours, theirs, size, (networks.get("input_nc", 3),
                                            networks.get("output_nc", 3)), steps=2, atol=1e-3)


@pytest.mark.parametrize("network", [Generator(ngf=4, n_blocks=1), Discriminator(ndf=4)],
                         ids=["G", "D"])
def test_one_call_on_a_batch_gives_each_image_the_outputs_and_gradients_of_its_own_call(network):
    # What lets the step run G_A2B(real_A) with G_A2B(real_B), and D(real) with D(fake), as
    # one call.
    network = network.double()
    inputs = [torch.rand(1, 3, 32, 32, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(i)) for i in range(3)]
    weights = [torch.rand_like(network(x)) for x in inputs]  # a different loss per image

    def outputs_and_gradients(outputs):
        network.zero_grad()
        sum((w * y).sum() for w, y in zip(weights, outputs)).backward()
        return [y.detach() for y in outputs], [p.grad.clone() for p in network.parameters()]

    separate = outputs_and_gradients([network(x) for x in inputs])
    batched = outputs_and_gradients(network(torch.cat(inputs)).split(1))
    for a, b in zip(separate[0] + separate[1], batched[0] + batched[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_pool_stores_copies_that_do_not_hold_on_to_the_batch_they_came_from():
    pool = ImagePool(2)
    batch = images(4)
    pool.query(batch)
    assert all(im.untyped_storage().nbytes() == batch[0].numel() * batch.element_size()
               for im in pool.images)
    batch.zero_()
    assert all(im.abs().sum() > 0 for im in pool.images)


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


@pytest.mark.parametrize("epoch,factor", [(0, 1.0), (99, 1.0), (100, 100 / 101), (150, 50 / 101),
                                          (199, 1 / 101)])
def test_lr_is_constant_for_n_epochs_then_falls_linearly_over_n_epochs_decay(epoch, factor):
    assert lr_factor("linear", epoch, n_epochs=100, n_epochs_decay=100) == pytest.approx(factor)


def test_lr_stays_constant_without_epochs_of_decay():
    assert [lr_factor("linear", e, 5, 0) for e in range(5)] == [1.0] * 5


@pytest.mark.parametrize("policy", ["linear", "step", "plateau", "cosine"])
def test_each_lr_policy_gives_the_rates_of_the_authors_scheduler(policy):
    n_epochs, n_epochs_decay, lr_decay_iters = 10, 15, 4
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedulers = {  # their networks.get_scheduler, with --epoch_count 1
        "linear": lambda: torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: 1.0 - max(0, e + 1 - n_epochs) / float(n_epochs_decay + 1)),
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, lr_decay_iters, gamma=0.1),
        "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.2, threshold=0.01, patience=5),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, n_epochs, 0)}
    scheduler, theirs = schedulers[policy](), []
    for _ in range(n_epochs + n_epochs_decay):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if policy == "plateau":
            scheduler.step(0)  # their CycleGAN's metric, always 0
        else:
            scheduler.step()
    ours = [lr_factor(policy, e, n_epochs, n_epochs_decay, lr_decay_iters)
            for e in range(n_epochs + n_epochs_decay)]
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_set_lr_changes_both_optimisers():
    model = CycleGAN(**SMALL)
    model.set_lr(1e-5)
    assert [g["lr"] for g in model.opt_G.param_groups + model.opt_D.param_groups] == [1e-5, 1e-5]
