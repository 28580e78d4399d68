"""The multi-task hemisphere CNN: Table 4.1 layout, parameter count, shared hemisphere network."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cfbrain.models import MultiTaskHemisphereCNN, SliceCNN, count_parameters, predict_four_class
from cfbrain.models.mtl_cnn import THESIS_PARAMETER_COUNT

torch.set_num_threads(1)

# Conv 3x3 weights + biases + BatchNorm scale/shift for 1->16->32->48->64->64->64->64.
TRUNK = sum(9 * i * o + o + 2 * o for i, o in zip((1, 16, 32, 48, 64, 64, 64), (16, 32, 48, 64, 64, 64, 64)))
HEADS = (128 * 128 + 128 + 128 * 1 + 1) + (128 * 128 + 128 + 128 * 3 + 3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultiTaskHemisphereCNN().eval()


def test_layers_follow_table_4_1(model):
    convs = [m for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 48, 64, 64, 64, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.trunk.modules()) == 7
    maps = model.trunk.feature_maps(torch.rand(1, 1, 500, 200))
    assert maps.shape == (1, 64, 500 // 64, 200 // 64)  # six 2x2 poolings between seven blocks


def test_parameter_count(model):
    deployed = count_parameters(*model.deployed_modules())
    print(f"\nMTL CNN parameters: {deployed:,} (thesis {THESIS_PARAMETER_COUNT:,}); "
          f"half-brain head {count_parameters(model.half_brain_head):,}")
    assert count_parameters(model.trunk) == TRUNK == 157_872
    assert deployed == TRUNK + HEADS == 191_412
    # The thesis's 163,285 leaves 5,413 parameters beside this trunk: too few for two FC-128 heads.
    assert deployed - THESIS_PARAMETER_COUNT == 28_127
    assert count_parameters(model) == deployed + count_parameters(model.half_brain_head)


def test_output_shapes(model):
    x = torch.rand(3, 2, 2, 64, 64)
    outputs = model(x)
    assert outputs["presence"].shape == (3,) and outputs["side"].shape == (3, 3)
    assert model.half_brain_logits(x).shape == (3, 2)
    with pytest.raises(ValueError, match="hemispheres"):
        model(torch.rand(3, 2, 64, 64))
    with pytest.raises(ValueError, match="smaller"):
        model(torch.rand(1, 2, 2, 32, 32))


def test_one_network_for_both_hemispheres_and_every_slice(model):
    x = torch.rand(2, 2, 3, 64, 64)
    features = model.hemisphere_features(x)
    per_slice = model.trunk(x[0, 1].unsqueeze(1))  # left hemisphere of scan 0, slices as a batch
    assert torch.allclose(features[0, 1], per_slice.mean(0), atol=1e-6)
    swapped = model.hemisphere_features(x.flip(1))
    assert torch.allclose(swapped, features.flip(1), atol=1e-6)
    half = model.half_brain_logits(x)
    assert torch.allclose(model.half_brain_logits(x.flip(1)), half.flip(1), atol=1e-6)
    reordered = model.hemisphere_features(x[:, :, [2, 0, 1]])
    assert torch.allclose(reordered, features, atol=1e-6)


def test_four_class_rule():
    outputs = {"presence": torch.tensor([-1.0, 0.5, 3.0, 0.1, -0.1]),
               "side": torch.tensor([[9.0, 0, 0], [1, 2, 0], [0, 0, 1], [5, 0, 0], [5, 0, 0]])}
    assert predict_four_class(outputs).tolist() == [0, 2, 3, 1, 0]


def test_slice_cnn_is_a_feature_extractor():
    assert SliceCNN()(torch.rand(4, 1, 64, 96)).shape == (4, 64)
