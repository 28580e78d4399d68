"""Counterfactual scores on constructed cases, and the editing-experiment glue end to end on a fake denoiser."""
from __future__ import annotations

import json
import os
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from cfbrain.mededit.evaluate import (SUMMARY_COLUMNS, evaluate_counterfactuals, example_indices, figure_grid,
                                      mededit_markdown, method_cells)
from cfbrain.mededit.methods import (CounterfactualSet, MethodSpec, ablation_methods, editable_region,
                                     image_seeds, load_counterfactuals, parse_method, pixel_kernel, run_method,
                                     save_counterfactuals)
from cfbrain.mededit.nnunet import (NnUNetSettings, case_ids, export_for_nnunet, export_training_set,
                                          nnunet_segment, predict_command, read_predicted_masks)
from cfbrain.mededit import pipeline
from cfbrain.mededit.pipeline import DenoiserTraining, SamplingSettings, lesion_segmentation, train_denoiser
from cfbrain.models.diffusion_unet import DiffusionUNetConfig
from cfbrain.train.loop import constant_lr
from cfbrain.mededit.triplets import counterpart_triplets, load_triplets, random_triplets, save_triplets
from cfbrain.diffusion.masks import dilate
from cfbrain.diffusion.schedule import NoiseSchedule
from cfbrain.metrics.counterfactual import (fidelity_error, indirect_effect_ceiling, indirect_effect_region,
                                           indirect_effect_score)
from cfbrain.preprocess.mri import MRISliceSet
from cfbrain.synth.mri import TruthSlices

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 24


def constructed_case(n: int = 3):
    """Healthy h with a lesion L and, away from it, a 'ventricle' enlarged by 0.3 in y (the indirect effect)."""
    rng = np.random.default_rng(0)
    healthy = (0.5 + 0.02 * rng.standard_normal((n, SIZE, SIZE))).astype(np.float32)
    lesion = np.zeros((n, SIZE, SIZE), np.uint8)
    lesion[:, 4:8, 4:8] = 1
    lesioned = healthy.copy()
    lesioned[:, 4:8, 4:8] -= 0.3
    lesioned[:, 14:20, 12:18] -= 0.3
    brain = np.zeros((n, SIZE, SIZE), np.uint8)
    brain[:, 1:-1, 1:-1] = 1
    return healthy, lesioned, lesion, brain


def test_indirect_effect_score_on_constructed_cases():
    healthy, lesioned, lesion, brain = constructed_case()
    region = indirect_effect_region(healthy, lesioned, lesion, brain)
    assert region[:, 16, 14].all() and not region[:, 5, 5].any() and not region[:, 0, 0].any()

    def score(counterfactual):
        return indirect_effect_score(healthy, lesioned, counterfactual, lesion, brain)

    np.testing.assert_allclose(score(lesioned), 1.0)
    np.testing.assert_allclose(score(healthy), 0.0)
    np.testing.assert_allclose(score(healthy + 0.5 * (lesioned - healthy)), 0.5)  # half the change: half the score
    np.testing.assert_allclose(score(healthy + 3.0 * (lesioned - healthy)), 0.0)  # worse than nothing: clipped
    only_lesion = healthy.copy()
    only_lesion[:, 4:8, 4:8] -= 0.3
    np.testing.assert_allclose(score(only_lesion), 0.0)  # the direct effect alone earns nothing here
    assert np.isnan(indirect_effect_score(healthy, only_lesion, lesioned, lesion, brain)).all()  # no indirect effect


def test_indirect_effect_ceiling_is_the_share_of_the_change_a_method_may_edit():
    healthy, lesioned, lesion, brain = constructed_case()

    def ceiling(editable):
        return indirect_effect_ceiling(healthy, lesioned, editable, lesion, brain)

    np.testing.assert_allclose(ceiling(np.ones_like(lesion)), 1.0)  # Palette, SDEdit: the whole image
    np.testing.assert_allclose(ceiling(lesion), 0.0)  # naive RePaint: the lesion only
    near = np.zeros_like(lesion)
    near[:, :, :15] = 1  # the lesion and the left half of the 'ventricle' (columns 12-14 of 12-17)
    assert (0.2 < ceiling(near)).all() and (ceiling(near) < 0.8).all()
    assert not editable_region("mededit", lesion, brain)[:, 16, 14].any()  # k = 25 is 5 pixels on 24-pixel slices
    np.testing.assert_array_equal(editable_region("naive_repaint", lesion, brain), lesion > 0)


def test_fidelity_error_counts_change_only_where_none_should_happen():
    healthy, lesioned, lesion, brain = constructed_case()

    def error(counterfactual, truth=lesioned):
        return fidelity_error(healthy, counterfactual, lesion, brain, lesioned=truth)

    np.testing.assert_allclose(error(healthy), 0.0)
    np.testing.assert_allclose(error(lesioned), 0.0)
    np.testing.assert_allclose(error(np.clip(healthy + 0.1, 0, 1)), 0.1, rtol=1e-5)
    assert (error(lesioned, truth=None) > 0).all()  # without truth the indirect change counts as infidelity
    outside_brain = healthy.copy()
    outside_brain[:, 0, :] += 0.5
    np.testing.assert_allclose(error(outside_brain), 0.0)


def toy_slices(n_lesioned: int = 3, n_healthy: int = 2) -> MRISliceSet:
    rng = np.random.default_rng(1)
    n = n_lesioned + n_healthy
    lesion = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n_lesioned):
        lesion[i, 6 + i:10 + 2 * i, 8:12 + i] = 1
    brain = np.zeros((n, SIZE, SIZE), np.uint8)
    brain[:, 2:-2, 3:-3] = 1
    return MRISliceSet(dataset="toy", scan=np.array([f"scan{i}" for i in range(n)]),
                       image=(rng.random((n, SIZE, SIZE)) * brain).astype(np.float32), lesion_mask=lesion,
                       brain_mask=brain)


def zeros_eps(x_t, t, cond):
    return torch.zeros_like(x_t)


FAST = {"schedule": NoiseSchedule(), "stride": 400}


def test_random_triplets_pair_masks_with_healthy_priors(tmp_path):
    slices = toy_slices()
    triplets = random_triplets(slices, ["scan0", "scan1", "scan2"], ["scan3", "scan4"], seed=0)
    assert triplets.mask_scan.tolist() == ["scan0", "scan1", "scan2"]
    assert set(triplets.prior_scan) <= {"scan3", "scan4"} and triplets.lesioned is None
    np.testing.assert_array_equal(triplets.lesion_mask, slices.lesion_mask[:3])
    again = random_triplets(slices, ["scan0", "scan1", "scan2"], ["scan3", "scan4"], seed=0)
    np.testing.assert_array_equal(again.prior_scan, triplets.prior_scan)
    one_each = random_triplets(slices, ["scan0", "scan1"], ["scan3", "scan4"], seed=5)
    assert sorted(one_each.prior_scan) == ["scan3", "scan4"]
    with pytest.raises(ValueError, match="lesion-free"):
        random_triplets(slices, ["scan0"], ["scan1"], seed=0)
    with pytest.raises(ValueError, match="non-empty lesion"):
        random_triplets(slices, ["scan3"], ["scan4"], seed=0)
    path = tmp_path / "triplets.npz"
    save_triplets(path, triplets)
    loaded = load_triplets(path)
    assert loaded.mode == "random" and loaded.lesioned is None
    np.testing.assert_array_equal(loaded.prior, triplets.prior)
    boxes = triplets.pathology_mask(box=True)
    assert (boxes >= triplets.lesion_mask).all() and boxes.dtype == np.uint8


def test_method_names():
    assert parse_method("mededit") == MethodSpec(name="mededit", base="mededit", box=False, kernel_size=25,
                                                 resample_steps=4)
    box = parse_method("mededit_box")
    assert box.box and box.kernel_size == 20 and box.network == "mededit_box"
    assert parse_method("palette_box").network == "palette_box" and parse_method("sdedit").network == "mededit"
    assert parse_method("naive_repaint").resample_steps == 3 and parse_method("palette").network == "palette"
    assert parse_method("sdedit_box").kernel_size is None
    for bad in ("sdedit_k10", "palette_u2", "medit", "mededit_box_u"):
        with pytest.raises(ValueError):
            parse_method(bad)
    settings = ablation_methods()
    assert settings["kernel"] == {10: "mededit_k10", 15: "mededit_k15", 20: "mededit_k20", 25: "mededit"}
    assert settings["resample"][4] == "mededit" and settings["resample"][1] == "mededit_u1"


def test_mededit_kernel_covers_the_same_anatomy_at_any_slice_size():
    assert pixel_kernel(25, 128) == 25 and pixel_kernel(25, 64) == 12 and pixel_kernel(20, 32) == 5
    assert pixel_kernel(10, 8) == 1
    triplets = random_triplets(toy_slices(), ["scan0"], ["scan3"], seed=0)
    edited = run_method("mededit", {"mededit": zeros_eps}, triplets, **FAST)
    changed = np.abs(edited.counterfactual[0] - edited.prior[0]) > 1e-5
    lesion, brain = triplets.lesion_mask.astype(np.float32), triplets.brain_mask[0] > 0
    within = dilate(lesion, pixel_kernel(25, SIZE))[0] > 0  # 5 pixels on these 24-pixel slices
    assert changed.any() and not (changed & ~(within & brain)).any()
    assert (changed & ~(dilate(lesion, 3)[0] > 0)).any()  # grows beyond the lesion's 1-pixel rim


def test_results_do_not_depend_on_the_batch_size():
    triplets = random_triplets(toy_slices(), ["scan0", "scan1", "scan2"], ["scan3", "scan4"], seed=0)
    models = {"mededit": zeros_eps, "palette": zeros_eps}
    one = run_method("mededit_u1", models, triplets, batch_size=1, seed=7, **FAST)
    three = run_method("mededit_u1", models, triplets, batch_size=3, seed=7, **FAST)
    np.testing.assert_allclose(one.counterfactual, three.counterfactual, atol=1e-6)
    assert one.evaluations == 3 * three.evaluations


def test_runs_of_different_seeds_share_no_sampler_noise():
    """Image i of seed s draws from SeedSequence([s, i]): seed 1's image 0 is not seed 0's image 1."""
    assert not set(image_seeds(0, 0, 50)) & set(image_seeds(1, 0, 50))
    assert image_seeds(3, 2, 4) == image_seeds(3, 0, 4)[2:]
    triplets = random_triplets(toy_slices(), ["scan0", "scan1"], ["scan3", "scan4"], seed=0)
    runs = [run_method("sdedit", {"mededit": zeros_eps}, triplets, sdedit_ratio=0.6, seed=seed, **FAST)
            for seed in (0, 1)]
    assert not np.allclose(runs[0].counterfactual, runs[1].counterfactual)


def test_experiment_end_to_end(tmp_path):
    slices = toy_slices()
    healthy, lesioned, lesion, brain = constructed_case(3)
    truth = TruthSlices(dataset="toy", scan=np.array(["a", "b", "c"]), healthy=healthy, lesioned=lesioned,
                        lesion_mask=lesion, healthy_brain_mask=brain, displacement_mm=np.zeros_like(healthy))
    models = {network: zeros_eps for network in ("mededit", "palette", "mededit_box", "palette_box")}
    rng = np.random.default_rng(2)
    real_features = rng.normal(size=(6, 4))
    for triplets in (random_triplets(slices, ["scan0", "scan1", "scan2"], ["scan3", "scan4"], seed=0),
                     counterpart_triplets(truth, ["c", "a"])):
        rows, per_image, results = [], [], []
        for name in ("palette", "naive_repaint", "sdedit", "mededit", "mededit_box", "mededit_k10", "mededit_u2"):
            result = run_method(name, models, triplets, batch_size=2, sdedit_ratio=0.6, **FAST)
            assert result.counterfactual.shape == triplets.prior.shape
            assert 0.0 <= result.counterfactual.min() and result.counterfactual.max() <= 1.0
            path = tmp_path / f"{triplets.mode}_{name}.npz"
            save_counterfactuals(path, result)
            loaded = load_counterfactuals(path)
            np.testing.assert_array_equal(loaded.counterfactual, result.counterfactual)
            np.testing.assert_array_equal(loaded.difference, result.counterfactual - result.prior)
            summary, images = evaluate_counterfactuals(loaded, triplets, result.mask, real_features,
                                                       rng.normal(size=(len(triplets), 4)), n_bootstrap=3,
                                                       kid_subsets=4)
            rows.append(summary)
            per_image.append(images)
            results.append(loaded)
        table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).assign(seed=0)
        assert (table["dice"] == 1.0).all()  # the "segmentation" is the conditioning mask (rectangles here)
        naive = table.set_index("method").loc["naive_repaint"]
        assert naive["fidelity_error"] == pytest.approx(0.0, abs=1e-6)  # inpaints the lesion only
        if triplets.mode == "counterpart":
            assert table["n_indirect"].eq(2).all() and table["indirect_effect"].between(0, 1).all()
            ceilings = table.set_index("method")["indirect_ceiling"]
            assert ceilings["sdedit"] == 1.0 and ceilings["naive_repaint"] == 0.0 and ceilings["palette"] == 0.0
        else:
            assert table["indirect_effect"].isna().all()
        markdown = mededit_markdown(table, f"toy ({triplets.mode})")
        for heading in ("Mask conditioning", "Bounding-box conditioning", "dilation kernel", "resampling steps"):
            assert heading in markdown
        assert "| Naïve RePaint |" in markdown and "| 10 |" in markdown and "| 2 |" in markdown
        assert pd.concat(per_image)["method"].nunique() == 7
        figure = tmp_path / f"grid_{triplets.mode}.png"
        figure_grid(results[:4], triplets, figure, n_examples=2)
        assert figure.stat().st_size > 1000


def test_box_conditioning_is_scored_against_the_true_lesion_mask():
    """Thesis §4.1: Dice/IoU of the box fitted to the segmentation against the ground-truth pathology mask.
    An L-shaped lesion segmented perfectly fills 3 of its box's 4 quadrants: Dice 6/7 against the truth,
    1 against the conditioning box (the extra column)."""
    slices = toy_slices()
    lesion = np.zeros((SIZE, SIZE), np.uint8)
    lesion[6:10, 8:12] = 1
    lesion[8:10, 10:12] = 0  # L shape: 12 of the 16 pixels of its box
    slices.lesion_mask[:2] = lesion
    triplets = random_triplets(slices, ["scan0", "scan1"], ["scan3", "scan4"], seed=0)
    box = triplets.pathology_mask(box=True)
    result = CounterfactualSet(method="mededit_box", prior_scan=triplets.prior_scan, mask_scan=triplets.mask_scan,
                               prior=triplets.prior, counterfactual=triplets.prior, mask=box,
                               brain_mask=triplets.brain_mask, evaluations=0)
    features = np.random.default_rng(0).normal(size=(4, 3))
    summary, images = evaluate_counterfactuals(result, triplets, triplets.lesion_mask, features, features[:2],
                                               n_bootstrap=2, kid_subsets=2)
    assert summary["dice"] == pytest.approx(2 * 12 / (16 + 12)) and summary["iou"] == pytest.approx(12 / 16)
    assert summary["condition_box_dice"] == 1.0 and images["dice"].tolist() == [summary["dice"]] * 2
    mask_result = CounterfactualSet(**{**result.__dict__, "method": "mededit", "mask": triplets.lesion_mask})
    mask_summary, _ = evaluate_counterfactuals(mask_result, triplets, triplets.lesion_mask, features, features[:2],
                                               n_bootstrap=2, kid_subsets=2)
    assert mask_summary["dice"] == 1.0


def test_tables_report_mean_and_standard_error_over_seeds():
    row = {column: 0.5 for column in SUMMARY_COLUMNS if column != "method"}
    one = pd.DataFrame([{**row, "method": "mededit", "seed": 0, "dice": 0.6, "fid_mean": 8.0, "fid_std": 0.4}])
    assert method_cells(one).loc["mededit", "dice"] == "0.600"
    assert method_cells(one).loc["mededit", "fid"] == "8 ± 0.4"  # one seed: the bootstrap spread
    three = pd.DataFrame([{**row, "method": "mededit", "seed": seed, "dice": dice, "fid_mean": fid, "fid_std": 9.0}
                          for seed, dice, fid in [(0, 0.6, 8.0), (1, 0.7, 9.0), (2, 0.8, 10.0)]])
    cells = method_cells(three).loc["mededit"]
    assert cells["dice"] == "0.700 ± 0.058" and cells["fid"] == "9 ± 0.58"  # SD 0.1 (1.0) / sqrt(3)
    markdown = mededit_markdown(three, "toy")
    assert "| MedEdit | 0.5 ± 0 | 9 ± 0.58 |" in markdown
    assert "Mean ± standard error over 3 training seeds (0, 1, 2" in markdown
    assert "One training seed (0)" in mededit_markdown(one, "toy")


def test_denoisers_train_as_thesis_000_by_default(monkeypatch):
    """Constant learning rate, the pathological training slices, x̂0 unclipped, the run's seed."""
    settings = DenoiserTraining.from_mapping({"epochs": 1, "batch_size": 2}, seed=4)
    assert (settings.lr_schedule, settings.slices, settings.train.seed) == ("constant", "pathological", 4)
    assert SamplingSettings().clip_x0 is False
    with pytest.raises(ValueError, match="mededit.seeds"):
        DenoiserTraining.from_mapping({"seed": 0}, seed=1)
    with pytest.raises(ValueError, match="lr_schedule"):
        DenoiserTraining.from_mapping({"lr_schedule": "step"}, seed=1)
    calls = {}

    def fake_fit(model, phases, train, val, config, out_dir, **options):
        calls.update(n_train=len(train), n_val=len(val), seed=config.seed, scheduler=options["scheduler_factory"])

    monkeypatch.setattr(pipeline, "fit", fake_fit)
    splits = pd.DataFrame({"scan": [f"scan{i}" for i in range(5)], "split": ["train", "train", "val", "train", "val"],
                           "lesion_area": [16, 20, 24, 0, 0]})
    tiny = DiffusionUNetConfig(channels=(8, 8), attention_levels=(False, False), num_head_channels=8, norm_num_groups=4)
    train_denoiser("mededit", tiny, settings, toy_slices(), splits, "out", "resume")
    assert calls == {"n_train": 2, "n_val": 1, "seed": 4, "scheduler": constant_lr}
    everything = DenoiserTraining.from_mapping({"slices": "all", "lr_schedule": "cosine"}, seed=0)
    train_denoiser("palette", tiny, everything, toy_slices(), splits, "out", "resume")
    assert calls["n_train"] == 3 and calls["n_val"] == 2 and calls["scheduler"] is not constant_lr


@pytest.mark.parametrize("method", ["palette", "naive_repaint", "sdedit", "mededit"])
def test_clip_x0_reaches_every_sampler(method, monkeypatch):
    from cfbrain.diffusion import samplers

    seen = []

    def spy(eps_model, image, *masks, **options):
        seen.append(options["clip_x0"])
        return samplers.SamplerResult(image, 0)

    monkeypatch.setattr(samplers, method, spy)
    triplets = random_triplets(toy_slices(), ["scan0"], ["scan3"], seed=0)
    models = {"mededit": zeros_eps, "palette": zeros_eps}
    run_method(method, models, triplets, **FAST)
    run_method(method, models, triplets, clip_x0=True, **FAST)
    assert seen == [False, True]


def test_example_indices_spread_over_lesion_sizes():
    masks = np.zeros((5, 4, 4))
    for i, area in enumerate([3, 0, 5, 1, 8]):
        masks[i].flat[:area] = 1
    np.testing.assert_array_equal(example_indices(masks, 3), [1, 0, 4])  # smallest, median, largest
    assert len(example_indices(masks, 10)) == 5


def test_nnunet_round_trip(tmp_path):
    images = np.random.default_rng(3).random((2, 8, 6)).astype(np.float32)
    ids = case_ids("mededit", 2)
    paths = export_for_nnunet(images, ids, tmp_path / "in")
    assert [p.name for p in paths] == ["mededit_0000_0000.nii.gz", "mededit_0001_0000.nii.gz"]
    predictions = tmp_path / "out"
    predictions.mkdir()
    for case, image in zip(ids, images):
        nib.Nifti1Image((image[:, :, None] > 0.5).astype(np.uint8) * 2, np.eye(4)).to_filename(
            predictions / f"{case}.nii.gz")
    np.testing.assert_array_equal(read_predicted_masks(predictions, ids), (images > 0.5).astype(np.uint8))
    with pytest.raises(FileNotFoundError):
        read_predicted_masks(predictions, ["missing"])


FAKE_NNUNET = """#!{python}
# Stands in for nnUNetv2_predict_from_modelfolder: records its arguments, labels pixels > 0.5 as 2.
import argparse, json, pathlib, sys
import nibabel as nib, numpy as np
parser = argparse.ArgumentParser()
for flag in ("-i", "-o", "-m", "-chk", "-device"):
    parser.add_argument(flag, required=True)
parser.add_argument("-f", nargs="+", type=int, required=True)
parser.add_argument("--disable_tta", action="store_true")
args = parser.parse_args()
if not pathlib.Path(args.m, "fold_0").is_dir():
    sys.exit("no fold_0 in " + args.m)
out = pathlib.Path(args.o)
out.mkdir(parents=True, exist_ok=True)
(out.parents[1] / "argv.json").write_text(json.dumps(sys.argv[1:]))
for path in sorted(pathlib.Path(args.i).glob("*_0000.nii.gz")):
    image = np.asarray(nib.load(path).dataobj)
    nib.Nifti1Image((image > 0.5).astype(np.uint8) * 2, np.eye(4)).to_filename(
        out / path.name.replace("_0000.nii.gz", ".nii.gz"))
"""


@pytest.fixture
def fake_nnunet(tmp_path, monkeypatch):
    """A fake prediction executable on PATH and a model folder with fold_0; argv lands in the work folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable = bin_dir / "nnUNetv2_predict_from_modelfolder"
    executable.write_text(FAKE_NNUNET.format(python=sys.executable))
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    model = tmp_path / "nnUNetTrainer__nnUNetPlans__2d"
    (model / "fold_0").mkdir(parents=True)
    return model


def test_nnunet_backend_segments_through_the_prediction_command(fake_nnunet, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    images = np.random.default_rng(4).random((3, 10, 7)).astype(np.float32)
    settings = NnUNetSettings.from_mapping({"model_folder": str(fake_nnunet), "folds": [0, 1],
                                            "checkpoint": "checkpoint_best.pth"})
    masks = nnunet_segment(images, settings, device="cpu")
    np.testing.assert_array_equal(masks, (images > 0.5).astype(np.uint8))  # same pixel order, labels fused
    argv = json.loads((tmp_path / "argv.json").read_text())  # written beside the (removed) work folder
    assert argv[argv.index("-m") + 1] == str(fake_nnunet) and argv[argv.index("-f") + 1:][:2] == ["0", "1"]
    assert argv[argv.index("-chk") + 1] == "checkpoint_best.pth" and "--disable_tta" not in argv
    segment_images = lesion_segmentation("nnunet", torch.device("cpu"), nnunet={"model_folder": str(fake_nnunet)})
    np.testing.assert_array_equal(segment_images(images[:1]), masks[:1])


def test_nnunet_prediction_command_and_errors(fake_nnunet, tmp_path):
    settings = NnUNetSettings(model_folder=str(fake_nnunet), folds=(0, 2), disable_tta=True)
    command = predict_command(settings, tmp_path / "in", tmp_path / "out", "cuda")
    assert command == ["nnUNetv2_predict_from_modelfolder", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                       "-m", str(fake_nnunet), "-f", "0", "2", "-chk", "checkpoint_final.pth", "-device", "cuda",
                       "--disable_tta"]
    images = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(FileNotFoundError, match="model folder"):
        nnunet_segment(images, NnUNetSettings(model_folder=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="not on PATH"):
        nnunet_segment(images, NnUNetSettings(model_folder=str(fake_nnunet), executable="no-such-nnunet"))
    (fake_nnunet / "fold_0").rmdir()
    with pytest.raises(RuntimeError, match="no fold_0"):
        nnunet_segment(images, settings)
    with pytest.raises(ValueError, match="model_folder"):
        lesion_segmentation("nnunet", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown segmenter backend"):
        lesion_segmentation("nnUNet", torch.device("cpu"))


def test_nnunet_training_set_layout(tmp_path):
    slices = toy_slices()
    description = json.loads(export_training_set(slices.image, slices.lesion_mask, list(slices.scan), tmp_path,
                                                 "cfbrain_toy").read_text())
    assert description["numTraining"] == 5 and description["labels"] == {"background": 0, "lesion": 1}
    assert description["channel_names"] == {"0": "MRI"} and description["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == [f"scan{i}_0000.nii.gz" for i in range(5)]
    np.testing.assert_array_equal(read_predicted_masks(tmp_path / "labelsTr", list(slices.scan)), slices.lesion_mask)
