"""Full-brain peers (Table 4.2): MONAI ResNets per slice, features averaged over slices."""
from __future__ import annotations

import pytest
import torch

from cfbrain.models import build_peer, count_parameters, resnet_peer
from cfbrain.models.peers import THESIS_PARAMETER_COUNTS

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_parameter_counts_match_the_thesis(name):
    assert count_parameters(build_peer(name)) == THESIS_PARAMETER_COUNTS[name]


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


def test_full_brain_cnn_and_unknown_names():
    assert build_peer("full_brain_cnn")(torch.rand(1, 2, 64, 128)).shape == (1, 4)
    with pytest.raises(ValueError, match="unknown peer"):
        build_peer("vit")
    with pytest.raises(ValueError, match="depth"):
        resnet_peer(34)
    with pytest.raises(ValueError, match="B, S, H, W"):
        build_peer("full_brain_cnn")(torch.rand(1, 1, 2, 64, 128))
