"""The networks: the authors' state_dict layout, the paper's architecture and initialisation."""
import os

import pytest
import torch
from torch import nn

from authors import their_discriminator, their_generator
from cyclegan import gan_loss
from models import (GENERATORS, NORMS, Discriminator, Generator, count_parameters,
                    make_discriminator, make_generator, translate)

REFERENCE = os.path.join(os.path.dirname(__file__), "official_state_dict_keys.txt")


def reference_layout(section):
    """{key: shape} for 'Generator' or 'Discriminator' from the authors' checkpoint listing."""
    layout, current = {}, None
    for line in open(REFERENCE):
        if line.startswith("#"):
            current = line.split()[1].split("(")[0]
        elif line.strip() and current == section:
            key, shape = line.split("\t")
            layout[key] = tuple(int(s) for s in shape.strip("()\n").split(",") if s.strip())
    return layout


def layout(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_generator_state_dict_has_the_authors_keys_and_shapes():
    assert list(layout(Generator()).items()) == list(reference_layout("Generator").items())


def test_discriminator_state_dict_has_the_authors_keys_and_shapes():
    assert list(layout(Discriminator()).items()) == list(reference_layout("Discriminator").items())


def test_default_parameter_counts_match_the_paper_release():
    assert count_parameters(Generator()) == 11_378_179
    assert count_parameters(Discriminator()) == 2_764_737


def test_a_checkpoint_in_the_authors_layout_loads_strictly_and_is_used():
    state = {k: torch.randn(shape) for k, shape in reference_layout("Generator").items()}
    G = Generator()
    G.load_state_dict(state, strict=True)
    assert torch.equal(G.model[26].bias, state["model.26.bias"])
    assert torch.equal(G.model[10].conv_block[5].weight, state["model.10.conv_block.5.weight"])


def test_patchgan_scores_a_30x30_map_of_patches_for_a_256_input():
    assert Discriminator()(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_generator_output_has_the_input_shape_and_lies_in_tanh_range():
    out = Generator(ngf=8, n_blocks=2)(torch.randn(2, 3, 64, 48) * 3)
    assert out.shape == (2, 3, 64, 48)
    assert out.abs().max() <= 1


def test_instance_norm_has_no_affine_parameters_or_running_stats():
    norms = [m for m in Generator(ngf=8, n_blocks=2).modules() if isinstance(m, nn.InstanceNorm2d)]
    norms += [m for m in Discriminator(ndf=8).modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == (1 + 2 + 2 * 2 + 2) + 3
    assert all(not m.affine and not m.track_running_stats for m in norms)


def test_discriminator_first_and_last_convs_have_no_norm_after_them():
    layers = list(Discriminator().model)
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.2
    assert isinstance(layers[-1], nn.Conv2d)
    strides = [m.stride[0] for m in layers if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 2, 1, 1]


def test_conv_weights_start_from_normal_0_002_and_biases_from_zero():
    G = Generator()
    weights = torch.cat([m.weight.flatten() for m in G.modules()
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    biases = torch.cat([m.bias for m in G.modules()
                        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert torch.count_nonzero(biases) == 0


@pytest.mark.parametrize("height,width", [(37, 50), (64, 64), (1, 5), (129, 130)])
def test_translate_returns_exactly_the_input_size(height, width):
    G = Generator(ngf=4, n_blocks=1)
    assert translate(G, torch.rand(1, 3, height, width)).shape == (1, 3, height, width)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("netG", GENERATORS)
def test_each_generator_has_the_authors_layout_and_computes_their_function(netG, norm):
    torch.manual_seed(0)
    theirs = their_generator(netG, input_nc=1, output_nc=3, ngf=4, norm=norm).eval()
    ours = make_generator(netG, in_ch=1, out_ch=3, ngf=4, norm=norm).eval()
    assert layout(ours) == layout(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    size = 2 ** 8 if netG == "unet_256" else 2 ** 7
    x = torch.rand(2, 1, size, size // 2 if netG.startswith("resnet") else size) * 2 - 1
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("netD", ["basic", "n_layers", "pixel"])
def test_each_discriminator_has_the_authors_layout_and_computes_their_function(netD, norm):
    theirs = their_discriminator(netD, input_nc=1, ndf=4, n_layers_D=4, norm=norm).eval()
    ours = make_discriminator(netD, in_ch=1, ndf=4, n_layers=4, norm=norm).eval()
    assert layout(ours) == layout(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(2, 1, 96, 64) * 2 - 1
    torch.testing.assert_close(ours(x), theirs(x))


def test_a_u_net_256_halves_a_256_image_eight_times_and_has_the_authors_size():
    G = make_generator("unet_256")
    assert count_parameters(G) == 54_409_603  # with instance norm: no norm weights
    assert G(torch.zeros(1, 3, 256, 256)).shape == (1, 3, 256, 256)
    assert translate(G, torch.zeros(1, 3, 100, 300)).shape == (1, 3, 100, 300)


def test_the_multiscale_discriminator_is_the_patchgan_at_full_half_and_quarter_scale():
    D = make_discriminator("multiscale", ndf=4)
    x = torch.rand(1, 3, 128, 96)
    maps = D(x)
    assert [m.shape[-2:] for m in maps] == [(14, 10), (6, 4), (2, 1)]
    half = nn.functional.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    torch.testing.assert_close(maps[1], D.scales[1](half))
    assert not torch.equal(D.scales[0].model[0].weight, D.scales[1].model[0].weight)


def test_a_multiscale_gan_loss_is_the_mean_of_the_scales_losses():
    maps = [torch.full((1, 1, 4, 4), 0.5), torch.full((1, 1, 2, 2), 0.0)]
    assert gan_loss(maps, True).item() == pytest.approx((0.25 + 1.0) / 2)


@pytest.mark.parametrize("init_type,check", [
    ("normal", lambda w: w.std().item() == pytest.approx(0.5, rel=0.05)),
    ("xavier", lambda w: w.std().item() == pytest.approx(
        0.5 * (2 / (w.shape[1] * 9 + w.shape[0] * 9)) ** 0.5, rel=0.05)),
    ("kaiming", lambda w: w.std().item() == pytest.approx((2 / (w.shape[1] * 9)) ** 0.5,
                                                          rel=0.05)),
    ("orthogonal", lambda w: torch.allclose(w.flatten(1) @ w.flatten(1).T,
                                            0.25 * torch.eye(w.shape[0]), atol=1e-4)),
])
def test_init_type_and_gain_initialise_the_convolutions_as_the_authors(init_type, check):
    G = make_generator("resnet_6blocks", init_type=init_type, init_gain=0.5)
    weight = G.model[10].conv_block[1].weight  # 256 x 256 x 3 x 3
    assert check(weight.detach())
    assert all(torch.count_nonzero(m.bias) == 0 for m in G.modules()
               if isinstance(m, nn.Conv2d) and m.bias is not None)


def test_batch_norm_scales_start_from_normal_1_gain_and_shifts_from_zero():
    G = make_generator("resnet_9blocks", norm="batch", init_gain=0.02)
    scales = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.005)
    assert scales.std().item() == pytest.approx(0.02, rel=0.1)


def test_no_norm_drops_the_biases_of_the_convolutions_before_norms_as_the_authors_do():
    G = make_generator("resnet_9blocks", norm="none", ngf=4)
    with_bias = [name for name, _ in G.named_parameters() if name.endswith("bias")]
    assert with_bias == ["model.26.bias"]
