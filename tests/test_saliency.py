"""Saliency maps of thesis 003 chapter 5 (eq. 5.3-5.4 and the peers), their alignment with the tensor, the
territory maps and the hit score."""
from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cfbrain.models import MultiTaskHemisphereCNN, SliceCNN, SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.preprocess.ct import CTTensor, save_tensor
from cfbrain.preprocess.geometry import CropBox
from cfbrain.preprocess.hemispheres import split_hemispheres as split_numpy
from cfbrain.preprocess.volume import load_ct
from cfbrain.register.flirt_matrix import write_template_to_ct
from cfbrain.saliency import (METHODS, TERRITORY_LABELS, LesionClassifier, SaliencySettings, compute_saliency,
                              hit_score, hit_score_table, is_hit, join_hemispheres, read_saliency, read_territory_map,
                              scan_hits, scan_territory_map, split_hemispheres, territory_map, true_labels, write_saliency,
                              write_synthetic_territory_atlas)
from cfbrain.saliency.figures import probability_trace_figure, saliency_figure
from cfbrain.saliency.methods import (LESION, NO_LESION, counterfactual_saliency, grad_cam, latent_counterfactual,
                                      latent_shift, mean_of_normalised, normalise, vanilla_gradient)

S, H, W = 5, 16, 16
FAST = SaliencySettings(steps=3, shift_max_doublings=4, ig_steps=4)


class Identity(nn.Module):
    """An 'autoencoder' whose latent is the image: eq. 5.4 becomes a problem in pixel space."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class ProbeModel(nn.Module):
    """A hemisphere model (MultiTaskHemisphereCNN's interface and trunk) whose presence logit reads only
    one hemisphere (0 right, 1 left) of one slice."""

    def __init__(self, hemisphere: int, slice_index: int) -> None:
        super().__init__()
        self.hemisphere, self.slice_index = hemisphere, slice_index
        self.trunk = SliceCNN(filters=(4, 4))
        self.head = nn.Linear(4, 1)

    def forward(self, hemispheres: torch.Tensor) -> dict[str, torch.Tensor]:
        b, h, s, height, width = hemispheres.shape
        maps = self.trunk.feature_maps(hemispheres.reshape(b * h * s, 1, height, width))
        chosen = maps.reshape(b, h, s, *maps.shape[1:])[:, self.hemisphere, self.slice_index]
        return {"presence": self.head(chosen.mean(dim=(-2, -1))).squeeze(-1)}


class PixelModel(nn.Module):
    """Presence logit = one pixel (row, col) of one hemisphere slice, in the model's hemisphere layout."""

    def __init__(self, hemisphere: int, slice_index: int, row: int, col: int) -> None:
        super().__init__()
        self.where = (hemisphere, slice_index, row, col)
        self.weight = nn.Parameter(torch.tensor(3.0))

    def forward(self, hemispheres: torch.Tensor) -> dict[str, torch.Tensor]:
        h, s, r, c = self.where
        return {"presence": self.weight * hemispheres[:, h, s, r, c]}


def tensor_file(path: Path, image: np.ndarray, midline_col: np.ndarray | None = None,
                lesion_mask: np.ndarray | None = None) -> Path:
    n, height, width = image.shape
    zeros = np.zeros(image.shape, np.uint8)
    midline = np.full(n, (width - 1) / 2, np.float32) if midline_col is None else midline_col
    save_tensor(path, CTTensor(image=image.astype(np.float32), head_mask=zeros, brain_mask=zeros,
                               lesion_mask=lesion_mask, midline_col=midline, midline_source="centre",
                               slice_index=np.arange(n), crop_box=CropBox(0, height, 0, width),
                               resized_hw=(height, width), pad=((0, 0), (0, 0)), pixel_mm=(1.0, 1.0),
                               voxel_mm=(5.0, 1.0, 1.0), source_shape=image.shape, source_affine=np.eye(4),
                               hu_window=(0.0, 100.0)))
    return path


@pytest.fixture
def autoencoder() -> SpatialAutoencoder:
    torch.manual_seed(1)
    return SpatialAutoencoder(SpatialAutoencoderConfig(stem_channels=4)).eval()


@pytest.fixture
def scan(tmp_path) -> Path:
    return tensor_file(tmp_path / "scan.npz", np.random.default_rng(0).random((S, H, W), dtype=np.float32))


# --------------------------------------------------------------------------- hemispheres


def test_torch_split_is_the_preprocessing_split_and_join_undoes_it():
    volume = np.random.default_rng(0).random((S, H, W), dtype=np.float32)
    midline = np.array([7.5, 8.5, 6.5, 7.5, 9.0], np.float32)
    f = LesionClassifier(MultiTaskHemisphereCNN(), midline, W)
    halves = split_hemispheres(torch.from_numpy(volume), f.shifts)
    np.testing.assert_array_equal(halves.numpy(), split_numpy(volume, midline))
    joined = join_hemispheres(halves, f.shifts).numpy()
    kept = joined != 0  # columns shifted out of the image and back in are 0
    np.testing.assert_array_equal(joined[kept], volume[kept])
    assert kept.mean() > 0.9


def test_classifier_is_the_presence_logit_of_the_hemisphere_model():
    torch.manual_seed(0)
    model = MultiTaskHemisphereCNN().eval()
    volume = np.random.default_rng(1).random((3, 64, 128), dtype=np.float32)
    f = LesionClassifier(model, np.full(3, 63.5, np.float32), 128)
    with torch.no_grad():
        expected = model(torch.from_numpy(split_numpy(volume))[None])["presence"][0]
        torch.testing.assert_close(f(torch.from_numpy(volume)), expected)


# --------------------------------------------------------------------------- eq. 5.3-5.4


def linear_detector(x: torch.Tensor):
    """f = 1000 (mean(x0) - mean(x)): darker is more lesion; P(lesion) = 0.5 at x0."""
    centre = float(x.mean())
    return lambda slices: 1000.0 * (centre - slices.mean())


@pytest.mark.parametrize("target", [LESION, NO_LESION])
def test_eq_5_4_objective_decreases_and_moves_the_output_towards_the_target(target):
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    search = latent_counterfactual(linear_detector(x), Identity(), x, target, steps=20, alpha=100.0, step_size=1e-4)
    assert search.probability.shape == search.objective.shape == (21,)
    assert torch.all(search.objective.diff() < 0)
    assert search.objective[0] == pytest.approx(math.log(2), abs=1e-5)  # BCE at P = 0.5, z = z0
    moved = search.probability[-1] - 0.5
    assert (moved > 0.3) if target == LESION else (moved < -0.3)
    assert search.probability[-1] == pytest.approx(float(torch.sigmoid(linear_detector(x)(search.counterfactual))))


def test_the_l1_term_holds_the_counterfactual_back():
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(steps=20, step_size=1e-4)
    held = latent_counterfactual(linear_detector(x), Identity(), x, NO_LESION, alpha=100.0, **kwargs)
    free = latent_counterfactual(linear_detector(x), Identity(), x, NO_LESION, alpha=0.0, **kwargs)
    assert free.probability[-1] < held.probability[-1] - 0.05
    assert (free.counterfactual - x).abs().mean() > (held.counterfactual - x).abs().mean()


def test_each_map_is_normalised_by_its_own_maximum_before_averaging():
    first, second = torch.tensor([[0.0, 2.0]]), torch.tensor([[4.0, 1.0]])
    torch.testing.assert_close(mean_of_normalised([first, second]), torch.tensor([[0.5, 0.625]]))
    assert torch.equal(normalise(torch.zeros(2, 2)), torch.zeros(2, 2))


def test_counterfactual_map_averages_the_two_normalised_differences(autoencoder):
    torch.manual_seed(0)
    x = torch.rand(S, H, W)
    f = LesionClassifier(MultiTaskHemisphereCNN(filters=(4, 4, 4), hidden=8), np.full(S, 7.5, np.float32), W)
    settings = SaliencySettings(steps=2, step_size=50.0)
    saliency, searches = counterfactual_saliency(f, autoencoder, x, settings)
    assert set(searches) == {LESION, NO_LESION}
    with torch.no_grad():
        reference = autoencoder(x[:, None])[:, 0]
    maps = [(reference - searches[t].counterfactual).abs() for t in (LESION, NO_LESION)]
    assert maps[0].max() != maps[1].max()  # otherwise the order of normalisation would not matter
    torch.testing.assert_close(saliency, (maps[0] / maps[0].max() + maps[1] / maps[1].max()) / 2)


# --------------------------------------------------------------------------- latent shift


def test_latent_shift_doubles_lambda_from_1e5_and_stops_below_p_001():
    x = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    a, w = 4.0, 0.5  # logit a at x; f = a + w * sum(x - x0)
    f = lambda slices: a + w * (slices - x).sum()  # noqa: E731
    # z_lambda = x + lambda * dP/dx = x + lambda * sigma'(a) * w, so logit(lambda) = a + lambda sigma'(a) w^2 N
    slope = torch.sigmoid(torch.tensor(a)) * (1 - torch.sigmoid(torch.tensor(a))) * w ** 2 * x.numel()
    needed = (a - math.log(0.01 / 0.99)) / float(slope)  # |lambda| at which P = 0.01
    k_stop = math.ceil(math.log2(needed / 1e-5))
    saliency, search = latent_shift(f, Identity(), x, start=1e-5, stop_probability=0.01, max_doublings=60)
    np.testing.assert_allclose(search.lambdas.numpy(), -1e-5 * 2.0 ** np.arange(k_stop + 1))
    assert search.probability[-1] < 0.01 <= search.probability[-2]
    torch.testing.assert_close(search.counterfactual, x + search.lambdas[-1] * float(slope) / (w * x.numel()))
    assert saliency.max() == 1.0
    _, capped = latent_shift(f, Identity(), x, start=1e-5, stop_probability=0.01, max_doublings=k_stop - 3)
    assert len(capped.lambdas) == k_stop - 2 and capped.probability.min() == capped.probability[-1] >= 0.01


# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("method", METHODS)
def test_a_classifier_reading_one_slice_of_the_left_hemisphere_gets_saliency_only_there(method, scan, autoencoder,
                                                                                       one_torch_thread):
    torch.manual_seed(0)
    k = 3
    saliency = compute_saliency(method, scan, ProbeModel(hemisphere=1, slice_index=k), autoencoder,
                                SaliencySettings(steps=3, step_size=1.0, shift_max_doublings=4, ig_steps=4))
    values = saliency.values.astype(np.float32)
    assert values.shape == (S, H, W) and saliency.values.dtype == np.float16
    assert values[k].max() == 1.0 and values.min() >= 0
    assert not np.delete(values, k, axis=0).any()
    peak_col = np.unravel_index(np.argmax(values[k]), (H, W))[1]
    assert peak_col >= W // 2  # patient left = high columns
    if method not in ("counterfactual", "counterfactual_negative", "latent_shift"):
        assert not values[:, :, : W // 2].any()


@pytest.mark.parametrize("shift", [0, 2])
def test_gradient_of_a_lateral_left_pixel_lands_on_the_left_edge(tmp_path, shift):
    """Hemisphere column j of the mirrored left half is image column W - 1 - j (midline centred)."""
    midline = np.full(S, (W - 1) / 2 + shift, np.float32)
    file = tensor_file(tmp_path / "s.npz", np.full((S, H, W), 0.5, np.float32), midline_col=midline)
    saliency = compute_saliency("gradient", file, PixelModel(1, 2, row=5, col=3), None, FAST).values
    assert list(zip(*np.nonzero(saliency))) == [(2, 5, W - 1 - 3 + shift)]
    saliency = compute_saliency("gradient", file, PixelModel(0, 2, row=5, col=3), None, FAST).values
    assert list(zip(*np.nonzero(saliency))) == [(2, 5, 3 + shift)]


def test_grad_cam_is_on_the_slice_grid_of_the_read_slice_and_side(scan, one_torch_thread):
    torch.manual_seed(0)
    image = torch.from_numpy(np.random.default_rng(0).random((S, H, W), dtype=np.float32))
    for hemisphere, side in ((0, slice(0, W // 2)), (1, slice(W // 2, W))):
        f = LesionClassifier(ProbeModel(hemisphere, slice_index=1), np.full(S, (W - 1) / 2, np.float32), W)
        cam = grad_cam(f, image)
        assert cam.shape == (S, H, W)
        assert cam[1, :, side].max() == 1.0
        outside = torch.ones(S, H, W, dtype=torch.bool)
        outside[1, :, side] = False
        assert not cam[outside].any()
    full = LesionClassifier(MultiTaskHemisphereCNN(), np.full(3, 63.5, np.float32), 128)
    assert grad_cam(full, torch.rand(3, 64, 128)).shape == (3, 64, 128)


def test_compute_saliency_checks_its_inputs(scan):
    with pytest.raises(ValueError, match="unknown saliency method"):
        compute_saliency("guided", scan, ProbeModel(0, 0), None, FAST)
    with pytest.raises(ValueError, match="needs the trained autoencoder"):
        compute_saliency("latent_shift", scan, ProbeModel(0, 0), None, FAST)


def test_saliency_files_round_trip_with_traces_and_figures(tmp_path, scan, autoencoder, one_torch_thread):
    model = ProbeModel(1, 2)
    maps = {m: compute_saliency(m, scan, model, autoencoder, FAST) for m in METHODS}
    assert set(maps["counterfactual"].trace) == {"to_lesion", "to_none", "objective_to_lesion", "objective_to_none"}
    assert maps["counterfactual"].trace["to_none"].shape == (FAST.steps + 1,)
    assert set(maps["counterfactual_negative"].trace) == {"to_none", "objective_to_none"}
    assert set(maps["latent_shift"].trace) == {"lambda", "shift"}
    path = write_saliency(tmp_path / "saliency" / "gradient" / "seed0" / "scan.npz", maps["counterfactual"])
    back = read_saliency(path)
    assert back.method == "counterfactual" and back.probability == pytest.approx(maps["counterfactual"].probability)
    np.testing.assert_array_equal(back.values, maps["counterfactual"].values)
    assert all(np.array_equal(back.trace[k], v) for k, v in maps["counterfactual"].trace.items())
    first = path.read_bytes()
    assert write_saliency(path, maps["counterfactual"]).read_bytes() == first  # byte-reproducible
    lesion = np.zeros((S, H, W), np.uint8)
    lesion[2, 4:8, 10:14] = 1
    from cfbrain.preprocess.ct import load_tensor
    tensor = load_tensor(tensor_file(tmp_path / "lesion.npz", np.random.default_rng(0).random((S, H, W)),
                                     lesion_mask=lesion))
    assert saliency_figure(tensor, maps, tmp_path / "fig54.png", "scan").stat().st_size > 0
    assert probability_trace_figure([maps["counterfactual"]], [maps["latent_shift"]], tmp_path / "fig55.png",
                                    ["scan"]).stat().st_size > 0


# --------------------------------------------------------------------------- territories and hit score


def test_true_labels_cover_every_territory_on_every_side():
    assert true_labels("MCA", "left") == {TERRITORY_LABELS["MCA", "left"]}
    assert true_labels("MCA,PCA", "both") == {TERRITORY_LABELS[t, s] for t in ("MCA", "PCA") for s in ("left", "right")}
    assert len(set(TERRITORY_LABELS.values())) == 6 and 0 not in TERRITORY_LABELS.values()
    for territory, side in (("", "left"), ("MCA", "none"), ("BASILAR", "left")):
        with pytest.raises(ValueError):
            true_labels(territory, side)


def test_hit_score_on_a_hand_made_case():
    labels = np.zeros((2, 4, 6), np.uint8)
    labels[:, :, :3] = TERRITORY_LABELS["MCA", "right"]  # patient right = low columns
    labels[:, :, 3:] = TERRITORY_LABELS["MCA", "left"]
    labels[1, 0, :3] = TERRITORY_LABELS["PCA", "right"]

    def peak_at(*index) -> np.ndarray:
        saliency = np.zeros(labels.shape, np.float32)
        saliency[index] = 1.0
        return saliency

    assert is_hit(peak_at(0, 2, 4), labels, "MCA", "left")
    assert not is_hit(peak_at(0, 2, 1), labels, "MCA", "left")  # right side
    assert is_hit(peak_at(0, 2, 1), labels, "MCA", "both")
    assert is_hit(peak_at(1, 0, 1), labels, "MCA,PCA", "right")
    assert not is_hit(peak_at(1, 0, 1), labels, "MCA", "right")  # PCA right, not MCA
    scans = pd.DataFrame({"scan": ["a", "b", "c", "d"], "lesion": [1, 1, 1, 0],
                          "territory": ["MCA", "MCA", "PCA", ""], "side": ["left", "right", "both", "none"]})
    saliency = {"a": peak_at(0, 1, 5), "b": peak_at(0, 1, 5), "c": peak_at(1, 0, 0), "d": peak_at(0, 0, 0)}
    hits = scan_hits(scans, saliency, {s: labels for s in scans.scan})
    assert hits.scan.tolist() == ["a", "b", "c"] and hits.hit.tolist() == [True, False, True]
    assert hit_score(hits.hit) == pytest.approx(2 / 3)
    assert math.isnan(hit_score([]))
    table, per_seed = hit_score_table(pd.concat([hits.assign(method="m", seed=0),
                                                 hits.assign(method="m", seed=1, hit=[True] * 3)]))
    assert per_seed.hit_score.tolist() == pytest.approx([2 / 3, 1.0]) and "83.3 ± 16.7" in table


def nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, str(path))
    return path


def test_territory_atlas_is_carried_into_the_tensor_grid(tmp_path):
    """2 mm template and CT grids aligned to whole voxels, a translation as the registration: every tensor
    pixel's label is the atlas label at the template point the matrix sends onto it."""
    atlas_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    atlas_affine[:3, 3] = (-20.0, -24.0, -16.0)
    i, j, k = np.indices((20, 24, 16))
    atlas = np.where(i < 10, TERRITORY_LABELS["MCA", "left"], TERRITORY_LABELS["MCA", "right"])  # x < 0: left
    atlas = np.where(k >= 12, TERRITORY_LABELS["ACA", "left"] + (i >= 10), atlas).astype(np.uint8)
    atlas = np.where(j < 3, 0, atlas).astype(np.uint8)
    template = nifti(tmp_path / "template.nii.gz", (i + j + k).astype(np.float32), atlas_affine)
    atlas_path = nifti(tmp_path / "atlas.nii.gz", atlas, atlas_affine)
    ct_affine = atlas_affine.copy()
    ct_affine[:3, 3] = (-16.0, -30.0, -12.0)
    ct_path = nifti(tmp_path / "ct.nii.gz", np.zeros((18, 26, 14), np.float32), ct_affine)
    template_to_ct = np.eye(4)
    template_to_ct[:3, 3] = (4.0, -6.0, 2.0)
    matrix = write_template_to_ct(template_to_ct, template, ct_path, tmp_path / "template_to_ct.mat")

    loaded = load_ct(ct_path)  # display grid: (slice, row, col) = (z up, y back, x to patient left)
    box, index = CropBox(2, 22, 3, 15), np.array([1, 4, 7, 10, 13])
    zeros = np.zeros((5, 24, 16), np.uint8)
    tensor = CTTensor(image=zeros.astype(np.float32), head_mask=zeros, brain_mask=zeros, lesion_mask=None,
                      midline_col=np.full(5, 7.5, np.float32), midline_source="centre", slice_index=index,
                      crop_box=box, resized_hw=(20, 12), pad=((2, 2), (2, 2)), pixel_mm=(2.0, 2.0),
                      voxel_mm=loaded.voxel_mm, source_shape=loaded.shape, source_affine=loaded.affine,
                      hu_window=(0.0, 100.0))
    labels = territory_map(atlas_path, matrix, template, ct_path, tensor)
    assert labels.shape == (5, 24, 16) and labels.dtype == np.uint8

    expected = np.zeros_like(labels)
    for s in range(5):
        for r in range(2, 22):
            for c in range(2, 14):
                display = np.array([index[s], box.row0 + r - 2, box.col0 + c - 2, 1.0])
                template_world = np.linalg.inv(template_to_ct) @ (loaded.affine @ display)
                voxel = np.rint(np.linalg.inv(atlas_affine) @ template_world)[:3].astype(int)
                if np.all(voxel >= 0) and np.all(voxel < atlas.shape):
                    expected[s, r, c] = atlas[tuple(voxel)]
    np.testing.assert_array_equal(labels, expected)
    left, right = TERRITORY_LABELS["MCA", "left"], TERRITORY_LABELS["MCA", "right"]
    assert (labels[0][:, 8:] == left).sum() > 0 and not (labels[0][:, 8:] == right).any()
    registration = tmp_path / "registration"
    registration.mkdir()
    matrix.rename(registration / "template_to_ct.mat")
    (registration / "template.txt").write_text(f"{template}\n")
    tensor_npz = tmp_path / "tensor.npz"
    save_tensor(tensor_npz, tensor)
    path = scan_territory_map(atlas_path, registration, ct_path, tensor_npz, tmp_path / "territories" / "scan.npz")
    np.testing.assert_array_equal(read_territory_map(path), labels)


def test_labels_keep_their_values_through_downsampling():
    labels = np.random.default_rng(0).choice(np.array([0, 5, 200], np.uint8), (6, 40, 30))  # a mean is none of them
    zeros = np.zeros((2, 10, 10), np.uint8)
    tensor = CTTensor(image=zeros.astype(np.float32), head_mask=zeros, brain_mask=zeros, lesion_mask=None,
                      midline_col=np.full(2, 4.5, np.float32), midline_source="centre", slice_index=np.array([1, 4]),
                      crop_box=CropBox(5, 35, 2, 28), resized_hw=(10, 10), pad=((0, 0), (0, 0)), pixel_mm=(1, 1),
                      voxel_mm=(1, 1, 1), source_shape=labels.shape, source_affine=np.eye(4), hu_window=(0, 100))
    carried = tensor.labels_from_source(labels)
    assert carried.shape == (2, 10, 10) and carried.dtype == np.uint8
    assert set(np.unique(carried)) <= set(np.unique(labels[[1, 4], 5:35, 2:28]))
    with pytest.raises(ValueError, match="loaded volume's grid"):
        tensor.labels_from_source(labels[:5])


def test_synthetic_atlas_has_six_territories_on_their_sides(tmp_path):
    path = write_synthetic_territory_atlas(tmp_path / "atlas.nii.gz", resolution_mm=2)
    image = nib.load(str(path))
    labels = np.asarray(image.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, *TERRITORY_LABELS.values()}
    for (territory, side), label in TERRITORY_LABELS.items():
        x = (np.argwhere(labels == label) @ image.affine[:3, :3].T + image.affine[:3, 3])[:, 0]
        assert np.all(x < 0) if side == "left" else np.all(x > 0), (territory, side)
