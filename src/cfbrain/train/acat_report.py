"""``tables/acat.md``: ACAT and its peers against the hemisphere CNN (thesis 003 Tables 5.1-5.6), from the test
predictions of every run, model, saliency map and split seed, and the pre-activation variances of Table 5.6.

Predictions (``acat/{run}/predictions/{model}/{maps}/seed{k}.tsv``) have the columns of
:func:`cfbrain.train.stroke.predict_classifier` plus ``model``, ``maps`` (``none`` for the baseline ``mtl``),
``run`` (``full`` or ``frac<f>``) and ``seed``. Every table is a mean ± standard error over seeds, on the same
test scans for every method of a seed.
"""
from __future__ import annotations

import pandas as pd

from cfbrain.metrics.classification import (classification_summary, format_markdown, seeds_markdown_table,
                                            stratified_accuracy, summarise_seeds)

THESIS_TABLE_5_1 = {"mtl": 71.39, "smic": 70.85, "salclassnet": 69.43, "hsm": 71.38, "spatt": 70.96, "seatt": 71.23,
                    "acat": 72.55}
"""Four-class test accuracy on IST-3 (%), Table 5.1 (ViT: Table 4.2 of the classification stage)."""
MODEL_NAMES = {"mtl": "Baseline (hemisphere CNN)", "acat": "ACAT", "smic": "SMIC", "salclassnet": "SalClassNet",
               "hsm": "HSM", "hsm_saliency": "HSM (branch reads the map)", "spatt": "SpAtt", "seatt": "SeAtt"}
SIZE_COLUMNS = ("none", "1", "2", "3", "4")
"""Table 5.2's strata: no lesion, then infarct sizes 1-4 (IST-3 scale)."""


def per_seed_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, model, maps, seed): n_test and :func:`classification_summary`'s metrics."""
    keys = ["run", "model", "maps", "seed"]
    return pd.DataFrame([{**dict(zip(keys, key)), "n_test": len(group),
                          **classification_summary(group.label, group.pred)}
                         for key, group in predictions.groupby(keys, sort=False)])


def row_name(model: str, maps: str, saliency: str) -> str:
    """Table row: the model, with its maps when they are not the ones every model trains on."""
    name = MODEL_NAMES.get(model, model)
    return name if maps in ("none", saliency) else f"{name} – {maps.replace('_', ' ')} maps"


def size_strata(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per (row, seed, stratum) accuracy by infarct size (Table 5.2): "none" for lesion-free scans."""
    sizes = predictions["size"] if "size" in predictions else pd.Series(index=predictions.index, dtype=object)
    stratum = [("none" if int(lesion) == 0 else ("" if pd.isna(size) else str(int(size))))
               for lesion, size in zip(predictions.label.astype(int) > 0, sizes)]
    frames = []
    for (row, seed), group in predictions.assign(stratum=stratum).groupby(["row", "seed"], sort=False):
        table = stratified_accuracy(group.label, group.pred, group.stratum.tolist())
        frames.append(table.assign(row=row, seed=seed))
    return pd.concat(frames, ignore_index=True)


def size_table(predictions: pd.DataFrame) -> str:
    """Table 5.2: accuracy (%) by infarct size, mean ± standard error over seeds, one column per stratum."""
    strata = size_strata(predictions)
    columns = [s for s in SIZE_COLUMNS if s in set(strata.stratum)]
    summary = summarise_seeds(strata, ["row", "stratum"], ["accuracy"])
    cells = {(r, s): (f"{100 * m:.1f}" + ("" if pd.isna(e) else f" ± {100 * e:.1f}"))
             for r, s, m, e in zip(summary.row, summary.stratum, summary.accuracy_mean, summary.accuracy_se)}
    rows = list(dict.fromkeys(predictions.row))
    frame = pd.DataFrame({"model": rows, **{("no lesion" if s == "none" else f"IS-{s}"):
                                            [cells.get((r, s), "") for r in rows] for s in columns}})
    return format_markdown(frame)


def variance_table(variances: pd.DataFrame) -> str:
    """Table 5.6: mean over seeds of each conv layer's pre-activation variance, clean and noised inputs."""
    values = [c for c in variances.columns if c.startswith(("baseline_", "acat_"))]
    means = variances.groupby("layer", sort=True)[values].mean().reset_index()
    means["layer"] = [f"σ²,{layer}" for layer in means.layer]
    return format_markdown(means.map(lambda v: f"{v:.3g}" if isinstance(v, float) else v))


def limited_table(per_seed: pd.DataFrame, saliency: str) -> str:
    """Table 5.5: four-class accuracy (%) of every model trained on each fraction of the training split."""
    limited = per_seed[per_seed.run != "full"].copy()
    limited["fraction"] = [float(run.removeprefix("frac")) for run in limited.run]
    limited["row"] = [row_name(m, s, saliency) for m, s in zip(limited.model, limited.maps)]
    summary = summarise_seeds(limited, ["row", "fraction"], ["accuracy"])
    fractions = sorted(summary.fraction.unique())
    cells = {(r, f): (f"{100 * m:.1f}" + ("" if pd.isna(e) else f" ± {100 * e:.1f}"))
             for r, f, m, e in zip(summary.row, summary.fraction, summary.accuracy_mean, summary.accuracy_se)}
    rows = list(dict.fromkeys(limited.row))
    return format_markdown(pd.DataFrame({"model": rows, **{f"{100 * f:g} % of the training scans":
                                                           [cells.get((r, f), "") for r in rows] for f in fractions}}))


def acat_report(predictions: pd.DataFrame, variances: pd.DataFrame | None, dataset: str,
                saliency: str) -> tuple[str, pd.DataFrame]:
    """The markdown of ``tables/acat.md`` and the per-seed metrics (run, model, maps, seed, metrics)."""
    predictions = predictions.assign(maps=predictions["maps"].fillna("none"))
    predictions["row"] = [row_name(m, s, saliency) for m, s in zip(predictions.model, predictions.maps)]
    per_seed = per_seed_metrics(predictions)
    per_seed["row"] = [row_name(m, s, saliency) for m, s in zip(per_seed.model, per_seed.maps)]
    full = per_seed[per_seed.run == "full"]
    main = full[full.maps.isin(["none", saliency])]
    other_maps = full[~full.maps.isin(["none", saliency])]
    labels = {"accuracy": "four-class accuracy (%)", "task1_sensitivity": "sensitivity (%)",
              "task1_specificity": "specificity (%)", "row": "model"}
    thesis = ", ".join(f"{MODEL_NAMES[m]} {v:.2f} %" for m, v in THESIS_TABLE_5_1.items())
    lines = [f"# ACAT and its peers: {dataset}", "",
             f"Test scans per seed: {int(per_seed.n_test.median())}; seeds: "
             f"{sorted(int(s) for s in per_seed.seed.unique())}; every model is fine-tuned from the seed's "
             f"hemisphere CNN on `{saliency}` saliency maps. Mean ± standard error over seeds.", "",
             "## Table 5.1: four-class accuracy", "", seeds_markdown_table(main, "row", ["accuracy"], labels=labels),
             "", f"Thesis 003 on IST-3: {thesis}.", "",
             "## Table 5.2: accuracy (%) by infarct size", "",
             size_table(predictions[(predictions.run == "full") & predictions.maps.isin(["none", saliency])]),
             "", "## Table 5.4: lesion presence, sensitivity and specificity", "",
             seeds_markdown_table(main, "row", ["task1_sensitivity", "task1_specificity"], labels=labels)]
    if not other_maps.empty:
        lines += ["", "## Table 5.3: peers trained on other saliency maps", "",
                  seeds_markdown_table(other_maps, "row", ["accuracy", "task1_sensitivity", "task1_specificity"],
                                       labels=labels)]
    if (per_seed.run != "full").any():
        lines += ["", "## Table 5.5: limited training data (four-class accuracy, %)", "",
                  "Each fraction of the training split (stratified by class, nested) retrains the baseline, its "
                  "saliency maps and every model; the autoencoder is the full split's (it needs no labels).", "",
                  limited_table(per_seed, saliency)]
    if variances is not None and not variances.empty:
        lines += ["", "## Table 5.6: pre-activation variances (test scans)", "",
                  "Mean over the test scans' slices and over seeds; `noise1` adds standard Gaussian noise to the "
                  "inputs. ACAT here is the fine-tuned model of Table 5.1 (the thesis trained it from scratch for "
                  "this table).", "", variance_table(variances)]
    return "\n".join(lines) + "\n", per_seed.drop(columns="row")
