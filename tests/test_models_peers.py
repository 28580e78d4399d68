"""Full-brain peers (Table 4.2): MONAI ResNets, ViT and Swin per slice, features averaged over slices."""
from __future__ import annotations

import pytest
import torch

from cfbrain.models import build_peer, count_parameters, resnet_peer
from cfbrain.models.peers import THESIS_PARAMETER_COUNTS, VIT_FEATURES, VIT_PATCH

torch.set_num_threads(1)
THESIS_HW = (500, 400)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "swin"])
def test_parameter_counts_match_the_thesis(name):
    assert count_parameters(build_peer(name, THESIS_HW)) == THESIS_PARAMETER_COUNTS[name]


def test_vit_parameter_count_differs_from_the_thesis_as_documented():
    monai_positions = (THESIS_HW[0] // VIT_PATCH) * (THESIS_HW[1] // VIT_PATCH)
    thesis_positions = (THESIS_HW[0] // VIT_PATCH) ** 2 + 1  # vit-pytorch, image_size=500, cls position
    unused_cross_attention_norms = 6 * 2 * VIT_FEATURES
    expected = (THESIS_PARAMETER_COUNTS["vit"] - (thesis_positions - monai_positions) * VIT_FEATURES
                + unused_cross_attention_norms)
    assert count_parameters(build_peer("vit", THESIS_HW)) == expected == 51_368_964


def test_resnet18_averages_slice_features():
    torch.manual_seed(0)
    model = resnet_peer(18).eval()
    brain = torch.rand(2, 3, 64, 64)
    logits = model(brain)
    assert logits.shape == (2, 4)
    features = torch.stack([model.backbone(brain[:, s:s + 1]) for s in range(3)], dim=1)
    assert torch.allclose(logits, model.classifier(features.mean(1)), atol=1e-5)
    repeated = brain[:, :1].expand(2, 3, 64, 64)
    assert torch.allclose(model(repeated), model(brain[:, :1]), atol=1e-5)


@pytest.mark.parametrize("name, image_hw", [("vit", (50, 40)), ("swin", (33, 70))])
def test_transformers_classify_small_brains_and_train_every_used_parameter(name, image_hw):
    """11 slices of sizes that are not whole patches (ViT pads to 50x50, MONAI's Swin pads itself)."""
    torch.manual_seed(0)
    model = build_peer(name, image_hw).eval()
    brain = torch.rand(2, 11, *image_hw)
    logits = model(brain)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert torch.allclose(model(brain[:, :1].expand_as(brain)), model(brain[:, :1]), atol=1e-4)
    logits.logsumexp(dim=1).sum().backward()
    # MONAI's transformer blocks hold a cross-attention norm that only cross-attention uses
    untrained = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert untrained == [n for n, _ in model.named_parameters() if "norm_cross_attn" in n]


def test_vit_padding_is_zero_background():
    torch.manual_seed(0)
    model = build_peer("vit", (50, 40)).eval()
    padded = build_peer("vit", (50, 50)).eval()
    padded.load_state_dict(model.state_dict())
    brain = torch.rand(1, 2, 50, 40)
    assert torch.allclose(model(brain), padded(torch.nn.functional.pad(brain, (0, 10))), atol=1e-5)


def test_unknown_names_and_unusable_inputs():
    with pytest.raises(ValueError, match="unknown peer"):
        build_peer("vgg16")
    with pytest.raises(ValueError, match="depth"):
        resnet_peer(34)
    with pytest.raises(ValueError, match="B, S, H, W"):
        build_peer("full_brain_cnn")(torch.rand(1, 1, 2, 64, 128))
    with pytest.raises(ValueError, match="image_hw"):
        build_peer("vit")
    with pytest.raises(ValueError, match="at least 25x25"):
        build_peer("vit", (24, 64))
    with pytest.raises(ValueError, match="built for"):
        build_peer("vit", (50, 40))(torch.rand(1, 2, 50, 50))
    with pytest.raises(ValueError, match="at least 32x32"):
        build_peer("swin")(torch.rand(1, 2, 31, 64))
    assert build_peer("full_brain_cnn")(torch.rand(1, 2, 64, 128)).shape == (1, 4)
