"""The spatial-latent autoencoder of thesis 003 §5.6.2 and its training through the shared loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfbrain.models import SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.models.features import ReconstructionLoss
from cfbrain.preprocess.ct import CTTensor, save_tensor
from cfbrain.preprocess.geometry import CropBox
from cfbrain.train.autoencoder import (AutoencoderTraining, ScanSlices, collate_slices, reconstruction_figure,
                                      train_autoencoder)
from cfbrain.train.checkpoint import load_weights

TINY = SpatialAutoencoderConfig(stem_channels=8)


def tensor_file(path: Path, seed: int, shape=(3, 16, 12)) -> Path:
    """A preprocessed-scan file with random [0, 1] slices (only ``image`` matters here)."""
    image = np.random.default_rng(seed).random(shape, dtype=np.float32)
    zeros = np.zeros(shape, np.uint8)
    save_tensor(path, CTTensor(image=image, head_mask=zeros, brain_mask=zeros, lesion_mask=None,
                               midline_col=np.full(shape[0], (shape[2] - 1) / 2, np.float32), midline_source="centre",
                               slice_index=np.arange(shape[0]), crop_box=CropBox(0, shape[1], 0, shape[2]),
                               resized_hw=shape[1:], pad=((0, 0), (0, 0)), pixel_mm=(1.0, 1.0),
                               voxel_mm=(5.0, 1.0, 1.0), source_shape=shape, source_affine=np.eye(4),
                               hu_window=(0.0, 100.0)))
    return path


def test_default_architecture_is_the_authors(one_torch_thread):
    model = SpatialAutoencoder()
    assert model.encoder[0].out_channels == 128
    assert [b.body[0].out_channels for b in model.encoder[1:]] == [6, 12, 16]
    assert [b.body[0].stride[0] for b in model.encoder[1:]] == [1, 2, 2]
    blocks = [m for m in model.decoder if hasattr(m, "body")]
    assert [b.body[0].out_channels for b in blocks] == [16, 12, 12]
    assert [type(m).__name__ for m in model.decoder] == ["Upsample", "ResidualBlock", "Upsample", "ResidualBlock",
                                                         "ResidualBlock", "Conv2d"]


def test_spatial_latent_and_reconstruction_shapes(one_torch_thread):
    model = SpatialAutoencoder(TINY).eval()
    images = torch.rand(5, 1, 32, 24)
    latent = model.encode(images)
    assert latent.shape == (5, 16, 8, 6)
    assert model.decode(latent).shape == images.shape == model(images).shape
    with pytest.raises(ValueError, match="divisible by 4"):
        model.encode(torch.rand(1, 1, 30, 24))
    with pytest.raises(ValueError, match="one entry per stage"):
        SpatialAutoencoderConfig(channels=(6, 12))
    assert SpatialAutoencoderConfig.from_mapping({"channels": [4, 8, 16]}).channels == (4, 8, 16)


def test_latent_is_local_slice_by_slice(one_torch_thread):
    """Changing one slice's latent changes only that slice's reconstruction (no bottleneck mixing slices)."""
    torch.manual_seed(0)
    model = SpatialAutoencoder(TINY).eval()
    with torch.no_grad():
        latent = model.encode(torch.rand(3, 1, 16, 16))
        changed = latent.clone()
        changed[1] += 1.0
        difference = (model.decode(changed) - model.decode(latent)).abs().sum(dim=(1, 2, 3))
    assert difference[1] > 0 and difference[0] == 0 and difference[2] == 0


def test_one_training_step_reduces_the_loss(one_torch_thread):
    torch.manual_seed(0)
    model = SpatialAutoencoder(TINY)
    batch = collate_slices([{"image": torch.rand(3, 16, 12)} for _ in range(2)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, _ = ReconstructionLoss()(model, batch)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert float(ReconstructionLoss()(model, batch)[0]) < float(loss)


def test_collate_stacks_every_slice_scan_by_scan():
    scans = [{"image": torch.arange(3.0 * k, 3.0 * k + 3).view(3, 1, 1).expand(3, 4, 2)} for k in range(2)]
    batch = collate_slices(scans)
    assert batch["image"].shape == (6, 1, 4, 2)
    assert batch["image"][:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_training_logs_validation_mse_resumes_and_draws(tmp_path, one_torch_thread):
    files = {f"s{k}": tensor_file(tmp_path / f"s{k}.npz", k) for k in range(4)}
    split = pd.DataFrame({"scan": list(files), "split": ["train", "train", "train", "val"]})
    settings = AutoencoderTraining(epochs=2, batch_size=2, lr=1e-3, min_lr=1e-3)
    assert len(ScanSlices(list(files.values()))) == 4
    weights = train_autoencoder(split, files, TINY, settings, 0, tmp_path / "a", tmp_path / "a_ckpt", device="cpu")
    log = pd.read_csv(tmp_path / "a" / "train_log.tsv", sep="\t")
    assert log.epoch.tolist() == [1, 2] and log.val_loss.notna().all() and (log.val_loss > 0).all()

    # a run killed after its first epoch and restarted ends with the same weights
    from cfbrain.train import loop
    original = loop._Run.end_epoch

    def kill_after_first_epoch(self, phase, epochs):
        original(self, phase, epochs)
        raise KeyboardInterrupt

    loop._Run.end_epoch = kill_after_first_epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            train_autoencoder(split, files, TINY, settings, 0, tmp_path / "b", tmp_path / "b_ckpt", device="cpu")
    finally:
        loop._Run.end_epoch = original
    assert not (tmp_path / "b" / "final.pt").exists()
    epochs_trained = []
    train_epoch = loop._Run.train_epoch

    def counting(self, *args):
        epochs_trained.append(self.position.epoch)
        return train_epoch(self, *args)

    loop._Run.train_epoch = counting
    try:
        resumed = train_autoencoder(split, files, TINY, settings, 0, tmp_path / "b", tmp_path / "b_ckpt", device="cpu")
    finally:
        loop._Run.train_epoch = train_epoch
    assert epochs_trained == [1]  # only the second epoch was left
    first = load_weights(SpatialAutoencoder(TINY), weights).state_dict()
    second = load_weights(SpatialAutoencoder(TINY), resumed).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert pd.read_csv(tmp_path / "b" / "train_log.tsv", sep="\t").val_loss.tolist() == log.val_loss.tolist()

    figure = reconstruction_figure(load_weights(SpatialAutoencoder(TINY), weights), list(files.values())[:2],
                                   tmp_path / "recon.png", titles=["s0", "s1"])
    assert figure.stat().st_size > 0
