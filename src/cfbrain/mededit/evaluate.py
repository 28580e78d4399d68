"""Score counterfactuals (thesis 000 Tables 5.1-5.8 plus the synthetic-truth scores) and render the table
and the figure grid.

Per method (:func:`evaluate_counterfactuals`), with ``S`` the segmentation of the counterfactuals (the
pipeline's segmenter, or nnU-Net masks read with :func:`cfbrain.mededit.nnunet.read_predicted_masks`),
``L`` the triplet's ground-truth pathology (lesion) mask and ``P`` the conditioning mask (``L``, or its box
for ``*_box`` methods):

* ``fid_mean``/``fid_std``: FID of the counterfactuals against the real pathological test slices, the
  real set bootstrapped (:func:`cfbrain.metrics.generative.bootstrap_fid`); ``kid_mean``/``kid_std``;
* ``dice``, ``iou``: Dice and IoU of S against L for mask conditioning; for box conditioning the thesis's
  (§4.1, Tables 5.4, 5.8): of box(S), the box fitted to the segmentation, against L, the truth;
* ``condition_box_dice``: Dice of box(S) against box(P), the conditioning box (an extra, labelled column);
* ``dice_x_fid``: (1 - ``dice``) x ``fid_mean``;
* ``indirect_effect`` (mean over images with an indirect-effect region, ``n_indirect`` of them),
  ``indirect_ceiling`` (the best ``indirect_effect`` possible when only the method's editable region
  changes, :func:`~cfbrain.mededit.methods.editable_region`) and ``fidelity_error`` (mean):
  :mod:`cfbrain.metrics.counterfactual`, against the triplet's true lesion mask (never the box) and the
  prior's brain mask; the indirect-effect scores need counterpart triplets.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfbrain.mededit.methods import (BASE_METHODS, CounterfactualSet, ablation_methods, editable_region,
                                           parse_method)
from cfbrain.mededit.triplets import Triplets
from cfbrain.metrics.classification import format_markdown, summarise_seeds
from cfbrain.metrics.counterfactual import fidelity_error, indirect_effect_ceiling, indirect_effect_score
from cfbrain.metrics.generative import generative_scores
from cfbrain.metrics.segmentation import box_masks, box_scores, dice, dice_fid_product, iou

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["method", "n", "fid_mean", "fid_std", "kid_mean", "kid_std", "dice", "iou", "condition_box_dice",
                   "dice_x_fid", "indirect_effect", "n_indirect", "indirect_ceiling", "fidelity_error",
                   "evaluations"]
PER_IMAGE_COLUMNS = ["method", "index", "prior_scan", "mask_scan", "dice", "iou", "condition_box_dice",
                     "indirect_effect", "fidelity_error"]
METHOD_LABELS = {"palette": "Palette", "naive_repaint": "Naïve RePaint", "sdedit": "SDEdit", "mededit": "MedEdit"}


def _defined_mean(values: np.ndarray) -> float:
    """Mean over the finite values; NaN when there are none (no warning)."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else np.nan


def evaluate_counterfactuals(result: CounterfactualSet, triplets: Triplets, predicted_masks: np.ndarray,
                             real_features: np.ndarray, fake_features: np.ndarray, *, n_bootstrap: int = 10,
                             kid_subsets: int = 100, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Summary row (SUMMARY_COLUMNS) and per-image table (PER_IMAGE_COLUMNS) of one method (module docstring).

    Args:
        result: the method's counterfactuals, made from ``triplets``.
        predicted_masks: (N, H, W) lesion segmentation of ``result.counterfactual``.
        real_features, fake_features: (N_real, d) and (N, d) features of the real pathological test slices
            and of the counterfactuals (:func:`cfbrain.metrics.generative.extract_features`).
    """
    if not np.array_equal(result.prior_scan, triplets.prior_scan) or not np.array_equal(result.mask_scan,
                                                                                         triplets.mask_scan):
        raise ValueError(f"{result.method}: counterfactuals were not made from these triplets")
    spec = parse_method(result.method)
    scored = box_masks(predicted_masks) if spec.box else predicted_masks
    mask_dice, mask_iou = dice(scored, triplets.lesion_mask), iou(scored, triplets.lesion_mask)
    condition_box_dice = box_scores(predicted_masks, result.mask)["box_dice"]
    common = {"healthy": triplets.prior, "counterfactual": result.counterfactual,
              "lesion_mask": triplets.lesion_mask, "brain_mask": triplets.brain_mask}
    fidelity = fidelity_error(**common, lesioned=triplets.lesioned)
    if triplets.lesioned is None:
        indirect = ceiling = np.full(len(triplets), np.nan)
    else:
        indirect = indirect_effect_score(**common, lesioned=triplets.lesioned)
        ceiling = indirect_effect_ceiling(triplets.prior, triplets.lesioned,
                                          editable_region(spec, result.mask, triplets.brain_mask),
                                          triplets.lesion_mask, triplets.brain_mask)
    realism = generative_scores(real_features, fake_features, n_bootstrap=n_bootstrap, kid_subsets=kid_subsets,
                                seed=seed)
    summary = {
        "method": result.method, "n": len(triplets), **realism, "dice": float(np.mean(mask_dice)),
        "iou": float(np.mean(mask_iou)), "condition_box_dice": float(np.mean(condition_box_dice)),
        "dice_x_fid": dice_fid_product(float(np.mean(mask_dice)), realism["fid_mean"]),
        "indirect_effect": _defined_mean(indirect), "n_indirect": int(np.isfinite(indirect).sum()),
        "indirect_ceiling": _defined_mean(ceiling),
        "fidelity_error": float(np.nanmean(fidelity)),
        "evaluations": result.evaluations,
    }
    per_image = pd.DataFrame({
        "method": result.method, "index": np.arange(len(triplets)), "prior_scan": triplets.prior_scan,
        "mask_scan": triplets.mask_scan, "dice": mask_dice, "iou": mask_iou,
        "condition_box_dice": condition_box_dice, "indirect_effect": indirect, "fidelity_error": fidelity,
    }, columns=PER_IMAGE_COLUMNS)
    log.info("%s: FID %.3f ± %.3f, Dice %.3f, indirect %.3f, fidelity error %.4f", result.method,
             summary["fid_mean"], summary["fid_std"], summary["dice"], summary["indirect_effect"],
             summary["fidelity_error"])
    return summary, per_image


# --------------------------------------------------------------------------- tables


_CELLS = {
    "dice_x_fid": ("dice_x_fid", ".3g", None), "fid": ("fid_mean", ".3g", "fid_std"),
    "kid": ("kid_mean", ".3g", "kid_std"), "dice": ("dice", ".3f", None), "iou": ("iou", ".3f", None),
    "condition_box_dice": ("condition_box_dice", ".3f", None), "indirect_effect": ("indirect_effect", ".3f", None),
    "indirect_ceiling": ("indirect_ceiling", ".3f", None), "fidelity_error": ("fidelity_error", ".4f", None),
}
"""Table column key -> (summary column, number format, column of its bootstrap spread for one seed). FID/KID
get three significant digits: their scale depends on the feature extractor."""


def _cell(value: float, spread: float, number: str) -> str:
    """``value ± spread`` (the spread to two significant digits for ``g`` formats), ``–`` when undefined."""
    if pd.isna(value):
        return "–"
    if pd.isna(spread):
        return f"{value:{number}}"
    return f"{value:{number}} ± {spread:{'.2g' if number.endswith('g') else number}}"


def method_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """Cell text per method (index) and ``_CELLS`` key from SUMMARY_COLUMNS rows with a ``seed`` column: the
    value (FID/KID ± std over bootstrap runs) for one seed, mean ± standard error over seeds for several
    (:func:`cfbrain.metrics.classification.summarise_seeds`)."""
    if summary["seed"].nunique() == 1:
        return pd.DataFrame({key: [_cell(row[column], row[spread] if spread else np.nan, number)
                                   for _, row in summary.iterrows()]
                             for key, (column, number, spread) in _CELLS.items()}, index=summary["method"])
    over_seeds = summarise_seeds(summary, "method", [column for column, _, _ in _CELLS.values()]).set_index("method")
    return pd.DataFrame({key: [_cell(row[f"{column}_mean"], row[f"{column}_se"], number)
                               for _, row in over_seeds.iterrows()]
                         for key, (column, number, _) in _CELLS.items()}, index=over_seeds.index)


def _rows(cells: pd.DataFrame, first_header: str, names: dict[str, str], columns: dict[str, str]) -> str | None:
    """Markdown table of the methods ``names`` (method -> row label) with ``columns`` (header -> ``_CELLS``
    key) from :func:`method_cells`; None if none of the methods was run."""
    present = [(method, label) for method, label in names.items() if method in cells.index]
    if not present:
        return None
    table = pd.DataFrame([{first_header: label, **{header: cells.loc[method, key] for header, key in columns.items()}}
                          for method, label in present])
    return format_markdown(table)


def seeds_note(seeds: Sequence[int]) -> str:
    """What the cells are: one seed's scores or mean ± standard error over the training seeds."""
    if len(seeds) == 1:
        return (f"One training seed ({seeds[0]}): FID/KID mean ± std over bootstrap runs of the real set / KID "
                "subsets, other cells the seed's mean over images.")
    return (f"Mean ± standard error over {len(seeds)} training seeds ({', '.join(map(str, seeds))}: denoisers, "
            "sampler noise and FID bootstrap; one segmenter and one feature extractor score them all).")


def mededit_markdown(summary: pd.DataFrame, title: str) -> str:
    """``tables/mededit.md``: the mask- and box-conditioning tables and the two MedEdit ablations (those
    whose methods are in ``summary``, SUMMARY_COLUMNS rows with a ``seed`` column, one per method and seed)."""
    truth = {"Indirect effect ↑": "indirect_effect", "Ceiling": "indirect_ceiling", "Fidelity error ↓": "fidelity_error"}
    main = {"(1-Dice)×FID ↓": "dice_x_fid", "FID ↓": "fid", "KID ↓": "kid", "Dice ↑": "dice", **truth}
    box = {"(1-Dice)×FID ↓": "dice_x_fid", "FID ↓": "fid", "KID ↓": "kid", "Dice ↑": "dice", "IoU ↑": "iou",
           "Dice vs cond. box": "condition_box_dice", **truth}
    ablation = {"FID ↓": "fid", "Dice ↑": "dice", **truth}
    settings = ablation_methods()
    sections = [
        ("Mask conditioning (Tables 5.1, 5.5)", "Method", {m: METHOD_LABELS[m] for m in BASE_METHODS}, main),
        ("Bounding-box conditioning, box Dice/IoU against the true lesion (Tables 5.4, 5.8)", "Method",
         {f"{m}_box": METHOD_LABELS[m] for m in BASE_METHODS}, box),
        ("MedEdit dilation kernel k (pixels of a 128 x 128 slice), U = 4 (Tables 5.2, 5.6)", "k",
         {name: str(k) for k, name in settings["kernel"].items()}, ablation),
        ("MedEdit resampling steps U, k = 25 (Tables 5.3, 5.7)", "U",
         {name: str(u) for u, name in settings["resample"].items()}, ablation),
    ]
    cells = method_cells(summary)
    parts = [f"# {title}\n"]
    for heading, first_header, names, columns in sections:
        table = _rows(cells, first_header, names, columns)
        if table is not None:
            parts += [f"## {heading}\n", table]
    parts.append(seeds_note(sorted(summary["seed"].unique().tolist())) + " Dice/IoU: segmentation of the "
                 "counterfactual against the true lesion mask (box rows: the box fitted to the segmentation, as the "
                 "thesis; 'Dice vs cond. box': that box against the conditioning box). Indirect effect (1 = the "
                 "true indirect change reproduced, 0 = none) and fidelity error (mean |counterfactual - prior| "
                 "where nothing should change) need synthetic counterpart triplets; Ceiling: the indirect-effect "
                 "score of the true change copied into the region the method may edit (1 for SDEdit, which "
                 "regenerates the whole image, 0 for naïve RePaint and Palette, which keep the input outside the "
                 "mask); definitions in cfbrain.metrics.counterfactual.\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- figure


def example_indices(lesion_mask: np.ndarray, n_examples: int) -> np.ndarray:
    """Indices of ``n_examples`` triplets spread over the lesion sizes (evenly spaced in size order)."""
    areas = np.asarray(lesion_mask).reshape(len(lesion_mask), -1).sum(axis=1)
    order = np.argsort(areas, kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(n_examples, len(order)))).astype(int))
    return order[picks]


def figure_grid(results: Sequence[CounterfactualSet], triplets: Triplets, path: str | Path, *, n_examples: int = 4,
                difference_limit: float = 0.5) -> None:
    """Thesis Figure 5.1: per example row, the prior with the pathology mask outlined, the true lesioned
    image (counterpart triplets), then for each method its counterfactual and the difference
    ``counterfactual - prior`` (blue darker, red brighter, +-``difference_limit``). Written with Agg."""
    rows = example_indices(triplets.lesion_mask, n_examples)
    truth = triplets.lesioned is not None
    n_cols = 1 + truth + 2 * len(results)
    figure = Figure(figsize=(1.8 * n_cols, 1.9 * len(rows)))
    axes = figure.subplots(len(rows), n_cols, squeeze=False)
    for r, index in enumerate(rows):
        panels = [("prior + mask", triplets.prior[index], "gray")]
        if truth:
            panels.append(("true lesioned", triplets.lesioned[index], "gray"))
        for result in results:
            label = METHOD_LABELS.get(result.method, result.method)
            panels += [(label, result.counterfactual[index], "gray"),
                       (f"{label} diff.", result.difference[index], "RdBu_r")]
        for c, (label, image, cmap) in enumerate(panels):
            axis = axes[r, c]
            limits = (-difference_limit, difference_limit) if cmap == "RdBu_r" else (0.0, 1.0)
            axis.imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
            if c == 0:
                axis.contour(triplets.lesion_mask[index], levels=[0.5], colors="yellow", linewidths=0.6)
            if r == 0:
                axis.set_title(label, fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=150)
