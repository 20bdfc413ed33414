"""The networks: the authors' state_dict layout, the paper's architecture and initialisation."""
import os

import pytest
import torch
from torch import nn

from models import Discriminator, Generator, count_parameters, translate

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
