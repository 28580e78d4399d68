"""Chapter-6 glue (cfbrain.anomaly) and its scores (cfbrain.metrics.anomaly), at tiny sizes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cfbrain.anomaly.classifier import slice_classifier, slice_saliency
from cfbrain.anomaly.data import slice_splits, split_slices
from cfbrain.anomaly.ddpm import HealthyDDPMSettings, load_healthy_ddpm, train_config, train_healthy_ddpm
from cfbrain.anomaly.figures import counterfactual_figure, grid_heatmap
from cfbrain.anomaly.methods import METHODS, DifuseSettings, run_method
from cfbrain.metrics.anomaly import anomaly_table, lesion_scores, mean_anomaly, segmentation_scores
from cfbrain.models.autoencoder import SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.models.diffusion_unet import DIFFUSE_PARAMETERS, DIFFUSE_UNET, DiffusionUNetConfig, diffusion_unet
from cfbrain.preprocess.mri import VolumeSliceSet
from cfbrain.saliency.methods import SaliencySettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY_UNET = DiffusionUNetConfig(channels=(8, 8), attention_levels=(False, True), num_res_blocks=1,
                                num_head_channels=8, norm_num_groups=4, resblock_updown=True, scale_shift_norm=True)


def slice_set(n_subjects: int = 10, per_subject: int = 3, channels: int = 2, size: int = 16) -> VolumeSliceSet:
    rng = np.random.default_rng(0)
    n = n_subjects * per_subject
    lesion = np.zeros((n, size, size), np.uint8)
    lesion[::2, 4:9, 4:9] = 1  # every other slice has a lesion
    return VolumeSliceSet("toy", ("flair", "t1")[:channels], ("flair", "t1")[:channels],
                          np.repeat([f"s{i}" for i in range(n_subjects)], per_subject),
                          np.repeat([f"s{i}" for i in range(n_subjects)], per_subject), np.tile(np.arange(per_subject), n_subjects),
                          rng.random((n, channels, size, size), dtype=np.float32), lesion, np.ones_like(lesion),
                          np.zeros_like(lesion))


def test_the_thesis_network_has_the_thesis_parameter_count():
    with torch.device("meta"):
        network = diffusion_unet("unconditional", DIFFUSE_UNET, image_channels=4)
    assert sum(p.numel() for p in network.parameters()) == DIFFUSE_PARAMETERS == 138_288_772


def test_scale_shift_conditioning_modulates_the_group_norm():
    torch.manual_seed(0)
    network = diffusion_unet("unconditional", TINY_UNET, image_channels=2)
    block = network.network.down_blocks[0].resnets[0]
    assert block.time_emb_proj.out_features == 2 * block.out_channels
    torch.nn.init.normal_(block.conv2.conv.weight)
    x, emb = torch.randn(2, 8, 16, 16), torch.randn(2, 32)
    silu = torch.nn.functional.silu
    scale, shift = block.time_emb_proj(silu(emb))[:, :, None, None].chunk(2, dim=1)
    h = block.norm2(block.conv1(silu(block.norm1(x)))) * (1 + scale) + shift
    torch.testing.assert_close(block(x, emb), x + block.conv2(silu(h)))


def test_splits_are_by_subject_and_select_healthy_slices():
    slices = slice_set()
    splits = slice_splits(slices, seed=0)
    assert len(splits) == 10 and splits["subject"].is_unique
    assert splits["split"].value_counts().to_dict() == {"train": 7, "val": 2, "test": 1}
    healthy_train = split_slices(slices, splits, "train", lesion=False)
    assert not healthy_train.lesion.any()
    assert set(healthy_train.subject) <= set(splits.loc[splits.split == "train", "subject"])


def test_healthy_ddpm_trains_for_the_asked_iterations_and_loads_its_ema(tmp_path):
    slices = slice_set()
    settings = HealthyDDPMSettings(iterations=5, batch_size=4, mixed_precision=False)
    assert train_config(settings, 15).epochs == 2  # 4 batches per epoch: 2 epochs for 5 steps
    weights = train_healthy_ddpm(slices.select(~slices.lesion), None, TINY_UNET, settings, tmp_path / "out",
                                 tmp_path / "resume")
    log = pd.read_csv(weights.parent / "train_log.tsv", sep="\t")
    assert log["step"].iloc[-1] == 8
    model = load_healthy_ddpm(weights, TINY_UNET, channels=2)
    assert model(torch.zeros(1, 2, 16, 16), torch.tensor([10])).shape == (1, 2, 16, 16)


def constant_eps(x_t, t, cond):
    return torch.full_like(x_t, 0.2)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_counterfactuals_and_maps_in_range(method):
    slices = slice_set(n_subjects=1, per_subject=3)
    saliency = slices.lesion_mask.astype(np.float32) + 0.01
    result = run_method(method, constant_eps, slices.image, saliency, DifuseSettings(inversion_depth=100, stride=25,
                                                                                     batch_size=2))
    assert result.counterfactual.shape == slices.image.shape and result.anomaly_map.shape == (3, 16, 16)
    assert 0 <= result.anomaly_map.min() and result.anomaly_map.max() <= 1
    assert 0 <= result.counterfactual.min() and result.counterfactual.max() <= 1
    if method == "ddim":  # constant ε: DDIM retraces its own inversion, the input comes back
        np.testing.assert_allclose(result.counterfactual, slices.image, atol=1e-4)
    if method == "saliency":
        assert result.evaluations == 0 and set(np.unique(result.anomaly_map)) == {0.0, 1.0}


def test_anomaly_map_uses_the_observed_channels_only():
    slices = slice_set(n_subjects=1, per_subject=2)
    settings = DifuseSettings(inversion_depth=50, stride=25)
    saliency = np.ones((2, 16, 16), np.float32)
    full = run_method("ddpm", constant_eps, slices.image, saliency, settings)
    first = run_method("ddpm", constant_eps, slices.image, saliency, settings, observed_channels=[0])
    np.testing.assert_array_equal(full.counterfactual, first.counterfactual)
    assert not np.allclose(full.anomaly_map, first.anomaly_map)


def test_counterfactual_saliency_of_a_contrast_stack_is_one_map_per_slice():
    torch.manual_seed(0)
    slices = slice_set(n_subjects=1, per_subject=2, channels=2)
    classifier = slice_classifier(2).eval()
    autoencoder = SpatialAutoencoder(SpatialAutoencoderConfig(stem_channels=4, channels=(4, 4, 4),
                                                              decoder_channels=(4, 4, 4))).eval()
    maps = slice_saliency(classifier, autoencoder, slices.image, SaliencySettings(steps=2))
    assert maps.shape == (2, 16, 16) and maps.dtype == np.float32
    assert maps.max() == pytest.approx(1.0) and maps.min() >= 0


def test_dice_and_iou_on_lesion_slices_with_ignored_pixels():
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, :4, :4] = 1
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, :4, :4] = 0.8
    maps[0, 6:, 6:] = 0.9  # a false positive on pixels the ignore mask removes
    maps[1, 2:4, 2:4] = 0.9  # the healthy slice does not count
    ignore = np.zeros_like(truth)
    ignore[0, 6:, 6:] = 1
    assert lesion_scores(maps, truth, 0.5, ignore) == {"dice": 1.0, "iou": 1.0}
    assert lesion_scores(maps, truth, 0.5)["iou"] == pytest.approx(16 / 20)
    validation = np.maximum(maps, 0.5)  # background at 0.5: only thresholds >= 0.5 separate the lesion
    scores = segmentation_scores(validation, truth, maps * 0.5, truth, ignore, ignore)
    assert scores["threshold"] == 0.5 and scores["threshold_best_on_test"] < 0.4
    assert scores["dice_best_on_test"] == 1.0 and scores["dice"] == 0.0  # test lesion at 0.4 < 0.5
    assert mean_anomaly(maps[1:], truth[1:] * 0 + 1)[0] == pytest.approx(4 * 0.9 / 64)


def test_table_has_the_thesis_layout_with_mean_and_standard_error():
    per_seed = pd.DataFrame({"method": ["difuse", "difuse", "ddpm", "ddpm"], "seed": [0, 1, 0, 1],
                             "brats_dice": [0.7, 0.8, 0.5, 0.5], "brats_iou": [0.6, 0.6, 0.4, 0.4],
                             "wmh_dice": [0.5, 0.5, 0.4, 0.4], "wmh_iou": [0.5, 0.5, 0.4, 0.4],
                             "ct_kid": [0.04, 0.04, 0.03, 0.03]})
    table = anomaly_table(per_seed, {"difuse": "Dif-fuse", "ddpm": "DDPM"})
    lines = table.splitlines()
    assert lines[0] == "| Method | BraTS Dice ↑ | BraTS IoU ↑ | WMH Dice ↑ | WMH IoU ↑ | CT KID ↓ |"
    assert lines[2].startswith("| Dif-fuse | 0.750 ± 0.050 | 0.600 ± 0.000 |")


def test_figures_are_written(tmp_path):
    slices = slice_set(n_subjects=1, per_subject=2)
    result = run_method("saliency", None, slices.image, slices.lesion_mask.astype(np.float32),
                        DifuseSettings())
    assert counterfactual_figure(slices.image, {"ACAT": result}, tmp_path / "f.png", slices.lesion_mask).stat().st_size
    grid = pd.DataFrame([{"percentile": p, "inversion_depth": k, "dice": p * k / 1e5}
                         for p in (70, 80, 90, 95) for k in (250, 500, 750)])
    assert grid_heatmap(grid, tmp_path / "grid.png").stat().st_size
