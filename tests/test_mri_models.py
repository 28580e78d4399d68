"""Networks of the MRI editing experiment: denoiser variants, segmenter, feature extractors, their losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cfbrain.mededit.data import SliceDataset, random_flip, select_scans
from cfbrain.diffusion.samplers import mededit
from cfbrain.diffusion.schedule import NoiseSchedule
from cfbrain.models.diffusion_unet import (DenoisingLoss, DiffusionUNetConfig, conditioning_mask, diffusion_phase,
                                           diffusion_unet, load_eps_model)
from cfbrain.models.features import (AutoencoderConfig, AutoencoderFeatures, RadImageNetResNet50, ReconstructionLoss,
                                     SliceAutoencoder, autoencoder_phase, feature_extractor, load_radimagenet_features)
from cfbrain.models.segmenter import (SegmentationLoss, SegmenterConfig, hard_dice, lesion_segmenter, load_segmenter,
                                      segment, segmenter_phase)
from cfbrain.preprocess.mri import MRISliceSet
from cfbrain.train import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY_UNET = DiffusionUNetConfig(channels=(8, 16, 16), num_head_channels=8, norm_num_groups=8)
TINY_SEGMENTER = SegmenterConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
TINY_AUTOENCODER = AutoencoderConfig(channels=(4, 8, 16))


def slice_set(n: int = 4, size: int = 16, seed: int = 0) -> MRISliceSet:
    rng = np.random.default_rng(seed)
    lesion = np.zeros((n, size, size), np.uint8)
    lesion[: n // 2, 4:8, 5:9] = 1
    brain = np.zeros((n, size, size), np.uint8)
    brain[:, 2:-2, 2:-2] = 1
    return MRISliceSet(dataset="toy", scan=np.array([f"scan{i}" for i in range(n)]),
                       image=rng.random((n, size, size)).astype(np.float32), lesion_mask=lesion, brain_mask=brain)


def batch(n: int = 2) -> dict[str, torch.Tensor]:
    dataset = SliceDataset(slice_set(n))
    return {key: torch.stack([dataset[i][key] for i in range(n)]) for key in ("image", "lesion_mask", "brain_mask")}


@pytest.mark.parametrize("variant, in_channels", [("mededit", 3), ("palette", 2), ("unconditional", 1)])
def test_denoiser_variants_take_their_conditioning_and_predict_eps(variant, in_channels):
    model = diffusion_unet(variant, TINY_UNET)
    assert model.network.conv_in.conv.in_channels == in_channels
    x = torch.randn(2, 1, 16, 16)
    cond = {"mededit": torch.ones(2, 2, 16, 16), "palette": torch.randn(2, 1, 16, 16), "unconditional": None}[variant]
    assert model(x, torch.tensor([0, 999]), cond).shape == (2, 1, 16, 16)


def test_default_denoiser_follows_the_method_notes():
    network = diffusion_unet("mededit").network
    assert tuple(network.block_out_channels) == (128, 256, 256)
    assert tuple(network.attention_levels) == (False, True, True)
    assert tuple(network.num_res_blocks) == (1, 1, 1) and tuple(network.num_head_channels) == (256, 256, 256)
    with pytest.raises(ValueError, match="unknown diffusion UNet variant"):
        diffusion_unet("dif-fuse")


@pytest.mark.parametrize("variant, box", [("mededit", False), ("mededit", True), ("palette", False),
                                          ("unconditional", False)])
def test_denoising_loss_is_finite_and_reaches_every_parameter(variant, box):
    torch.manual_seed(0)
    model = diffusion_unet(variant, TINY_UNET)
    loss, metrics = DenoisingLoss(variant, box_masks=box)(model, batch())
    assert loss.ndim == 0 and torch.isfinite(loss) and metrics == {}
    loss.backward()
    gradients = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)
    assert sum(float(g.abs().sum()) for g in gradients) > 0


def test_palette_trains_as_an_inpainter_on_the_masked_region():
    """The network sees the clean image outside the mask and is scored only inside it (Palette's
    inpainting training): a prediction wrong by 1,000 outside the mask costs nothing."""
    data, seen = batch(), []

    def wrong_outside(x_t, t, cond):
        seen.append(x_t)
        return 1000.0 * (1 - data["lesion_mask"])

    torch.manual_seed(0)
    loss, _ = DenoisingLoss("palette")(wrong_outside, data)
    outside = data["lesion_mask"] == 0
    torch.testing.assert_close(seen[0][outside], (data["image"] * 2 - 1)[outside])
    assert float(loss) < 1.0


def test_box_conditioning_uses_the_filled_box_of_the_lesion():
    lesion = torch.zeros(1, 1, 8, 8)
    lesion[0, 0, 2, 3] = lesion[0, 0, 5, 6] = 1
    box = conditioning_mask(lesion, box=True)
    assert box.sum() == 4 * 4 and box[0, 0, 2:6, 3:7].all()
    assert torch.equal(conditioning_mask(lesion, box=False), lesion)
    condition = DenoisingLoss("mededit", box_masks=True).condition(torch.zeros(1, 1, 8, 8),
                                                                    {"lesion_mask": lesion, "brain_mask": lesion})
    assert torch.equal(condition[:, :1], box) and torch.equal(condition[:, 1:], lesion)


def test_trained_denoiser_with_ema_loads_into_the_sampler(tmp_path):
    torch.manual_seed(0)
    model = diffusion_unet("mededit", TINY_UNET)
    config = TrainConfig(epochs=1, batch_size=2, lr=1e-3, ema_decay=0.9, mixed_precision=False)
    result = fit(model, [diffusion_phase("mededit")], SliceDataset(slice_set()), None, config, tmp_path)
    eps_model = load_eps_model(result.final_weights, "mededit", TINY_UNET)
    assert not eps_model.training
    trained = dict(model.named_parameters())
    assert any(not torch.equal(p, trained[name]) for name, p in eps_model.named_parameters())  # EMA != last step
    healthy = torch.rand(1, 1, 16, 16) * 2 - 1
    masks = batch(1)
    edited = mededit(eps_model, healthy, masks["lesion_mask"], masks["brain_mask"], kernel_size=3,
                     resample_steps=1, schedule=NoiseSchedule(), stride=500)
    assert edited.images.shape == healthy.shape and torch.isfinite(edited.images).all()


def test_segmenter_loss_metric_and_masks(tmp_path):
    torch.manual_seed(0)
    model = lesion_segmenter(TINY_SEGMENTER)
    loss, metrics = SegmentationLoss()(model, batch())
    assert torch.isfinite(loss) and 0.0 <= float(metrics["dice"]) <= 1.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    config = TrainConfig(epochs=1, batch_size=2, mixed_precision=False)
    result = fit(model, [segmenter_phase()], SliceDataset(slice_set()), None, config, tmp_path)
    loaded = load_segmenter(result.final_weights, TINY_SEGMENTER)
    masks = segment(loaded, slice_set().image, batch_size=3)
    assert masks.shape == (4, 16, 16) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}


def test_hard_dice_on_hand_made_masks():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.zeros(2, 1, 4, 4)
    a[0, 0, :2] = 1
    b[0, 0, 1:3] = 1
    assert float(hard_dice(a, b)) == pytest.approx((2 * 4 / 16 + 1.0) / 2)  # second pair: both empty


def test_radimagenet_weights_load_from_a_state_dict(tmp_path):
    torch.manual_seed(0)
    trunk = RadImageNetResNet50()
    state = {f"module.{k}": v for k, v in trunk.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(3, 2048)
    path = tmp_path / "radimagenet_resnet50.pt"
    torch.save(state, path)
    extractor = feature_extractor(radimagenet_weights=path)
    features = extractor(torch.rand(3, 1, 32, 32))
    assert features.shape == (3, 2048) == (3, extractor.num_features)
    image = torch.rand(1, 1, 32, 32)
    expected = trunk.eval()(image.expand(-1, 3, -1, -1) - torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1))
    torch.testing.assert_close(extractor(image), expected.mean(dim=(2, 3)))
    extractor.train()
    assert not extractor.training
    del state["module.layer4.2.conv3.bias"]
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="layer4.2.conv3.bias"):
        load_radimagenet_features(path)


def test_in_domain_autoencoder_features_and_loss(tmp_path):
    torch.manual_seed(0)
    autoencoder = SliceAutoencoder(TINY_AUTOENCODER)
    loss, _ = ReconstructionLoss()(autoencoder, batch())
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in autoencoder.parameters())
    config = TrainConfig(epochs=1, batch_size=2, mixed_precision=False)
    result = fit(autoencoder, [autoencoder_phase()], SliceDataset(slice_set()), None, config, tmp_path)
    extractor = feature_extractor(autoencoder_weights=result.final_weights, autoencoder_config=TINY_AUTOENCODER)
    assert isinstance(extractor, AutoencoderFeatures) and extractor.num_features == 16
    assert extractor(torch.rand(5, 1, 16, 16)).shape == (5, 16)
    with pytest.raises(ValueError, match="give RadImageNet"):
        feature_extractor()


def test_slice_dataset_selection_and_flip():
    slices = slice_set()
    chosen = select_scans(slices, ["scan3", "scan0"])
    assert chosen.scan.tolist() == ["scan0", "scan3"]
    with pytest.raises(KeyError):
        select_scans(slices, ["nope"])
    sample = SliceDataset(chosen)[0]
    assert {k: v.shape for k, v in sample.items()} == {k: (1, 16, 16) for k in ("image", "lesion_mask", "brain_mask")}
    flips = [random_flip(sample, np.random.default_rng(seed)) for seed in range(8)]
    flipped = [f for f in flips if not torch.equal(f["image"], sample["image"])]
    assert flipped and all(torch.equal(f["lesion_mask"], sample["lesion_mask"].flip(-1)) for f in flipped)
