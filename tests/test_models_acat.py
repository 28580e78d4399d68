"""ACAT and its peers (thesis 003 §5.5, §5.6.3): shapes, parameter counts, residual attention, slice
attention, initialisation from the baseline, pre-activation variances (Table 5.6)."""
from __future__ import annotations

import pytest
import torch

from cfbrain.models import (ACAT, SALIENCY_MODELS, MultiTaskHemisphereCNN, build_saliency_model, count_parameters,
                            load_baseline, preactivation_variances)
from cfbrain.models.acat import BASELINE_PREFIXES, SliceAttention, SpatialAttention, modulate
from cfbrain.models.saliency_peers import SalClassNet, SelfAttention2d

SLICES = 3
SHAPE = (2, 2, SLICES, 64, 64)  # (B, hemispheres, S, H, W/2): the 7-block trunk needs 64 px a side
BASELINE_DEPLOYED = 191_412
# Added parameters over the deployed baseline, derived in the acat and saliency_peers docstrings.
SLICE_ATTENTION = {11: 704 * 64 + 64 + 64 * 11 + 11, SLICES: 192 * 64 + 64 + 64 * SLICES + SLICES}  # 45,835 / 12,547
SALIENCY_BRANCH = 192 + 4_704 + 13_968 + 27_840 + 37_056  # conv blocks 1-5 = 83,760
ATTENTION = 3 * (9 + 2)  # three 3x3 convs without bias + batch norms
FUSION = 3


def added(name: str, n_slices: int) -> int:
    return {"acat": SALIENCY_BRANCH + ATTENTION + FUSION + SLICE_ATTENTION[n_slices],
            "smic": 192 + 4_704,
            "salclassnet": 16 * 9,
            "hsm": 192 + 4_704 + 13_968 + 27_840,
            "hsm_saliency": 192 + 4_704 + 13_968 + 27_840,
            "spatt": ATTENTION + SLICE_ATTENTION[n_slices],
            "seatt": (2 * (48 * 6 + 6) + 48 * 48 + 48 + 1) + (2 * (64 * 8 + 8) + 64 * 64 + 64 + 1)}[name]


MASK_MODULES = {"acat": ("attention.0", "attention.1", "attention.2", "fusion"),
                "spatt": ("attention.0", "attention.1", "attention.2"),
                "smic": ("mask_activation",), "hsm": ("mask_activation",), "hsm_saliency": ("mask_activation",)}
"""The modules whose outputs are the masks S of G = F + F ⊙ S in each attention model."""


@pytest.fixture(scope="module")
def baseline() -> MultiTaskHemisphereCNN:
    torch.manual_seed(0)
    model = MultiTaskHemisphereCNN()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(SHAPE, generator=generator), torch.rand(SHAPE, generator=generator)


@pytest.mark.parametrize("name", SALIENCY_MODELS)
def test_output_shapes(name, one_torch_thread):
    torch.manual_seed(0)
    outputs = build_saliency_model(name, SLICES).eval()(*inputs())
    assert set(outputs) == {"presence", "side"}
    assert outputs["presence"].shape == (2,) and outputs["side"].shape == (2, 3)


def test_hemispheres_below_the_trunk_size_are_refused(one_torch_thread):
    image = torch.rand(1, 2, SLICES, 64, 32)
    with pytest.raises(ValueError, match="smaller than 64"):
        build_saliency_model("acat", SLICES)(image, image)
    with pytest.raises(ValueError, match="does not match"):
        build_saliency_model("acat", SLICES)(*inputs()[:1], torch.rand(1, 2, SLICES, 64, 64))


@pytest.mark.parametrize("n_slices", [SLICES, 11])
@pytest.mark.parametrize("name", SALIENCY_MODELS)
def test_parameter_counts(name, n_slices):
    assert count_parameters(*MultiTaskHemisphereCNN().deployed_modules()) == BASELINE_DEPLOYED
    assert count_parameters(build_saliency_model(name, n_slices)) - BASELINE_DEPLOYED == added(name, n_slices)


def test_acat_parameters_at_the_thesis_size():
    """191,412 + 83,760 + 33 + 3 + 45,835 = 321,043 at 11 slices."""
    assert count_parameters(ACAT(11)) == 321_043


def test_modulation_is_residual():
    features, mask = torch.randn(2, 4, 5, 5), torch.rand(2, 1, 5, 5)
    assert torch.equal(modulate(features, torch.zeros_like(mask)), features)
    assert torch.allclose(modulate(features, mask), features * (1 + mask))


@pytest.mark.parametrize("name", sorted(MASK_MODULES))
def test_zero_masks_leave_the_features_unchanged(name, baseline, one_torch_thread):
    """S = 0 everywhere gives G = F: every slice's features are the baseline trunk's."""
    torch.manual_seed(1)
    model = build_saliency_model(name, SLICES, baseline.state_dict()).eval()
    image, saliency = (x.reshape(-1, 1, 64, 64) for x in inputs())
    with torch.no_grad():
        expected = baseline.trunk(image)
        assert not torch.allclose(model.slice_features(image, saliency), expected, atol=1e-5)  # masks act
        modules = dict(model.named_modules())
        handles = [modules[m].register_forward_hook(lambda module, args, out: torch.zeros_like(out))
                   for m in MASK_MODULES[name]]
        features = model.slice_features(image, saliency)
    for handle in handles:
        handle.remove()
    assert torch.allclose(features, expected, atol=1e-6)


def test_acat_masks_come_from_the_saliency_map(baseline, one_torch_thread):
    model = build_saliency_model("acat", SLICES, baseline.state_dict()).eval()
    image, saliency = (x.reshape(-1, 1, 64, 64) for x in inputs())
    with torch.no_grad():
        features = model.slice_features(image, saliency)
        assert not torch.allclose(features, model.slice_features(image, saliency.flip(-1)), rtol=1e-3, atol=0)
        masks = model.saliency_masks(saliency)
    assert [tuple(m.shape[-2:]) for m in masks] == [(64, 64), (16, 16), (4, 4)]  # after conv 1, 3, 5
    assert all(((m > 0) & (m < 1)).all() for m in masks)


@pytest.mark.parametrize("name", ["salclassnet", "seatt"])
def test_peers_without_masks_start_as_the_baseline(name, baseline, one_torch_thread):
    """SalClassNet's saliency kernels start at zero and SeAtt's gamma at 0: the baseline's function."""
    model = build_saliency_model(name, SLICES, baseline.state_dict()).eval()
    image, saliency = inputs()
    with torch.no_grad():
        ours, theirs = model(image, saliency), baseline(image)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)


def test_self_attention_is_residual_and_acts():
    torch.manual_seed(0)
    block, x = SelfAttention2d(16), torch.randn(2, 16, 4, 4)
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.gamma.fill_(0.5)
        q, k, v = (conv(x).flatten(2) for conv in (block.query, block.key, block.value))
        attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (N, positions j, positions i), unscaled
        expected = x + 0.5 * (v @ attention.transpose(1, 2)).reshape(x.shape)
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_salclassnet_takes_the_baseline_kernels_for_the_image_channel(baseline):
    model = load_baseline(SalClassNet(), baseline.state_dict())
    weight = model.trunk.blocks[0][0].weight
    assert torch.equal(weight[:, :1], baseline.trunk.blocks[0][0].weight)
    assert not weight[:, 1:].any()


def test_slice_attention_is_an_unnormalised_sigmoid_weighted_sum(one_torch_thread):
    """Section 5.6.2: a sigmoid mask over slices, then the weighted sum (no softmax, no division)."""
    torch.manual_seed(0)
    attention = SliceAttention(SLICES, 8).eval()
    features = torch.randn(4, SLICES, 8)
    weights = attention.weights(features)
    assert weights.shape == (4, SLICES) and ((weights > 0) & (weights < 1)).all()
    assert torch.allclose(attention(features), (weights.unsqueeze(-1) * features).sum(dim=1))
    with torch.no_grad():  # every weight -> 1: the sum of the slices, S times their mean
        attention.mlp[-1].weight.zero_()
        attention.mlp[-1].bias.fill_(30.0)
    assert torch.allclose(attention(features), features.sum(dim=1), atol=1e-5)
    assert len(attention.mlp) == 4 and attention.mlp[2].p == 0.1 and attention.mlp[0].out_features == 64


def test_acat_pools_slices_by_attention(baseline, one_torch_thread):
    model = build_saliency_model("acat", SLICES, baseline.state_dict()).eval()
    features = torch.randn(4, SLICES, 64)
    assert torch.allclose(model.pool_slices(features), model.slice_attention(features))
    assert torch.allclose(build_saliency_model("smic", SLICES).pool_slices(features), features.mean(dim=1))


@pytest.mark.parametrize("name", SALIENCY_MODELS)
def test_built_from_the_baseline_reproduces_its_trunk_and_heads(name, baseline):
    model = build_saliency_model(name, SLICES, baseline.state_dict())
    ours, theirs = model.state_dict(), baseline.state_dict()
    shared = [k for k in theirs if k.startswith(BASELINE_PREFIXES)]
    assert len(shared) == 7 * 7 + 2 * 4  # 7 blocks of conv (2) + batch norm (5), two heads of 2 linears
    for key in shared:
        if name == "salclassnet" and key == SalClassNet.FIRST_CONV:
            continue
        assert torch.equal(ours[key], theirs[key]), key
    assert not any(k.startswith("half_brain_head.") for k in ours)


def test_acat_saliency_branch_keeps_its_own_initialisation(baseline):
    model = build_saliency_model("acat", SLICES, baseline.state_dict())
    assert not torch.equal(model.saliency_branch.blocks[0][0].weight, baseline.trunk.blocks[0][0].weight)
    assert len(model.saliency_branch.blocks) == 5


def test_load_baseline_refuses_an_incomplete_state(baseline):
    state = {k: v for k, v in baseline.state_dict().items() if not k.startswith("side_head.")}
    with pytest.raises(KeyError, match="side_head"):
        build_saliency_model("acat", SLICES, state)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown saliency model"):
        build_saliency_model("vit", SLICES)


def test_preactivation_variances_one_per_conv_layer(baseline, one_torch_thread):
    image, saliency = inputs()
    clean = preactivation_variances(baseline, image)
    assert len(clean) == 7
    slices = image.reshape(-1, 1, 64, 64)
    with torch.no_grad():
        first = baseline.trunk.blocks[0][1](baseline.trunk.blocks[0][0](slices))  # conv + batch norm
    assert clean[0] == pytest.approx(float(first.var(dim=0, unbiased=False).mean()), rel=1e-5)
    noised = preactivation_variances(baseline, image, noise_std=1.0, generator=torch.Generator().manual_seed(0))
    assert noised[0] > clean[0]
    model = build_saliency_model("acat", SLICES, baseline.state_dict())
    assert len(preactivation_variances(model, image, saliency)) == 7
    assert model.training and not any(block[-1]._forward_pre_hooks for block in model.trunk.blocks)


@pytest.mark.parametrize("name, reads_saliency", [("smic", True), ("hsm", False), ("hsm_saliency", True),
                                                  ("spatt", False), ("seatt", False), ("salclassnet", True)])
def test_which_peers_read_the_saliency_map(name, reads_saliency, baseline, one_torch_thread):
    torch.manual_seed(2)
    model = build_saliency_model(name, SLICES, baseline.state_dict()).eval()
    if name == "salclassnet":
        torch.nn.init.normal_(model.trunk.blocks[0][0].weight)
    image, saliency = (x.reshape(-1, 1, 64, 64) for x in inputs())
    with torch.no_grad():
        same = torch.equal(model.slice_features(image, saliency), model.slice_features(image, saliency.flip(-1)))
    assert same != reads_saliency


def test_spatial_attention_is_the_channel_max_through_conv_bn_sigmoid():
    torch.manual_seed(0)
    attention, features = SpatialAttention().eval(), torch.randn(2, 5, 6, 6)
    with torch.no_grad():
        expected = torch.sigmoid(attention.norm(attention.conv(features.amax(dim=1, keepdim=True))))
        assert torch.allclose(attention(features), expected) and expected.shape == (2, 1, 6, 6)
