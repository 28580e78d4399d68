"""``tables/saliency.md`` and its figures: the hit score of every saliency method over the lesion-positive test
scans of every split seed (thesis 003 §5.6.5), and whether each search moved the classifier.

Inputs are the files the workflow writes: ``saliency/full/{method}/seed{k}/{scan}.npz`` (maps and search
traces), ``territories/{scan}.npz`` (territory labels in the tensor grid) and the split and label tables.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cfbrain.metrics.classification import seeds_markdown_table
from cfbrain.preprocess.ct import load_tensor
from cfbrain.saliency.figures import probability_trace_figure, saliency_figure
from cfbrain.saliency.maps import Saliency, read_saliency
from cfbrain.saliency.territories import hit_score_table, read_territory_map, scan_hits

THESIS_HIT_SCORES = {"counterfactual_negative": 65.05, "latent_shift": 58.39, "gradient": 61.29, "gradcam": 11.67,
                     "integrated_gradients": 37.52}
"""§5.6.5 on IST-3 (%), hemisphere CNN; the thesis scored negative counterfactuals of its method."""
SEARCH_TRACES = {"counterfactual": "to_none", "counterfactual_negative": "to_none", "latent_shift": "shift"}
"""The trace of P(lesion) along each search towards "no lesion" (its last value: where the search ended)."""


def positive_test_scans(scans: pd.DataFrame) -> pd.DataFrame:
    """Lesion-positive test rows of a :func:`cfbrain.train.stroke.scan_table` (the scans the hit score counts)."""
    return scans[(scans.split == "test") & (scans.lesion.astype(int) == 1)]


def search_outcome(saliency: Saliency) -> float:
    """P(lesion) where the method's search towards "no lesion" ended (the lowest the latent shift reached);
    NaN for methods without a search."""
    trace = saliency.trace.get(SEARCH_TRACES.get(saliency.method, ""))
    if trace is None or not len(trace):
        return float("nan")
    return float(np.min(trace)) if saliency.method == "latent_shift" else float(trace[-1])


def method_rows(method: str, seed: int, scans: pd.DataFrame, maps_dir: Path,
                territories: Mapping[str, Path] | None) -> pd.DataFrame:
    """One row per lesion-positive test scan: method, seed, scan, P(lesion) of the input and after the search,
    and (with ``territories``) the territory label at the saliency peak and whether it is a hit."""
    positive = positive_test_scans(scans)
    maps = {scan: read_saliency(Path(maps_dir) / f"{scan}.npz") for scan in positive.scan}
    rows = pd.DataFrame({"method": method, "seed": seed, "scan": positive.scan.values,
                         "p_input": [maps[s].probability for s in positive.scan],
                         "p_after_search": [search_outcome(maps[s]) for s in positive.scan]})
    if territories is None:
        return rows
    hits = scan_hits(positive, {s: m.values for s, m in maps.items()},
                     {s: read_territory_map(territories[s]) for s in positive.scan})
    return rows.merge(hits[["scan", "peak_label", "hit"]], on="scan")


def saliency_markdown(rows: pd.DataFrame, dataset: str, has_territories: bool) -> tuple[str, pd.DataFrame]:
    """The markdown of ``tables/saliency.md`` and the per-seed table from :func:`method_rows` of every method
    and seed."""
    lines = [f"# Saliency maps: {dataset}", ""]
    per_seed = (rows.groupby(["method", "seed"], sort=False)
                .agg(n_scans=("scan", "size"), p_input=("p_input", "mean"), p_after_search=("p_after_search", "mean"))
                .reset_index())
    if rows.empty:
        return "\n".join(lines + ["No lesion-positive test scan in any split: nothing to score.", ""]), per_seed
    lines += [f"Lesion-positive test scans per seed: {int(per_seed.n_scans.median())}; seeds: "
              f"{sorted(int(s) for s in per_seed.seed.unique())}. Mean ± standard error over seeds.", ""]
    if has_territories:
        table, hit_seed = hit_score_table(rows)
        per_seed = per_seed.merge(hit_seed[["method", "seed", "hit_score"]], on=["method", "seed"])
        thesis = ", ".join(f"{m.replace('_', ' ')} {s:.2f} %" for m, s in THESIS_HIT_SCORES.items())
        lines += ["## Hit score (Section 5.6.5)", "",
                  "A hit: the voxel of greatest saliency lies in one of the scan's true arterial territories "
                  "(MCA, ACA, PCA x left, right); S = Hits / (Hits + Misses).", "", table, "",
                  f"Thesis 003 on IST-3 (hemisphere CNN): {thesis}.", ""]
    else:
        lines += ["No territory atlas for this dataset (set `saliency.territory_atlas`): no hit score.", ""]
    searched = per_seed[per_seed.method.isin(SEARCH_TRACES)]
    if not searched.empty:
        lines += ["## Did the search move the classifier? (Figure 5.5)", "",
                  "Mean P(lesion) of the lesion-positive test scans before and after each search towards "
                  "\"no lesion\" (the latent shift: the lowest it reached). A search that ends near the input's "
                  "value has not found a counterfactual.", "",
                  seeds_markdown_table(searched, "method", ["p_input", "p_after_search"],
                                       labels={"p_input": "P(lesion) of the input",
                                               "p_after_search": "after the search"}, percent=False, decimals=3),
                  ""]
    return "\n".join(lines), per_seed


def message_figure(path: Path, message: str) -> Path:
    """A PNG that says why a figure could not be drawn (the report still finds the file)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure = plt.figure(figsize=(6, 1.2))
    figure.text(0.5, 0.5, message, ha="center", va="center")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def saliency_figures(rows: pd.DataFrame, maps_dirs: Mapping[tuple[str, int], Path], tensors: Mapping[str, Path],
                     examples_png: Path, search_png: Path, n_traces: int = 3) -> None:
    """Figure 5.4 (the first lesion-positive test scan of the first seed, every method) and Figure 5.5 (the
    counterfactual search and the latent-shift sweep of up to ``n_traces`` such scans)."""
    if rows.empty:
        for path in (examples_png, search_png):
            message_figure(path, "no lesion-positive test scan")
        return
    seed = int(rows.seed.min())
    scans = list(dict.fromkeys(rows.loc[rows.seed == seed, "scan"]))
    methods = list(dict.fromkeys(rows.method))
    maps = {m: read_saliency(maps_dirs[m, seed] / f"{scans[0]}.npz") for m in methods}
    saliency_figure(load_tensor(tensors[scans[0]]), maps, examples_png, title=f"{scans[0]} (seed {seed})")
    search = next((m for m in ("counterfactual_negative", "counterfactual") if m in methods), None)
    if search is None or "latent_shift" not in methods:
        message_figure(search_png, "Figure 5.5 needs the counterfactual and latent_shift methods")
        return
    shown = scans[:n_traces]
    probability_trace_figure([read_saliency(maps_dirs[search, seed] / f"{s}.npz") for s in shown],
                             [read_saliency(maps_dirs["latent_shift", seed] / f"{s}.npz") for s in shown],
                             search_png, names=shown)


def saliency_report(methods: Sequence[str], seeds: Sequence[int], scans_by_seed: Mapping[int, pd.DataFrame],
                    maps_dirs: Mapping[tuple[str, int], Path], tensors: Mapping[str, Path],
                    territories: Mapping[str, Path] | None, dataset: str, examples_png: Path,
                    search_png: Path) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """Markdown, per-seed table and per-scan rows of ``tables/saliency.md``; draws both figures.

    scans_by_seed: seed -> :func:`~cfbrain.train.stroke.scan_table` of that seed's split; maps_dirs:
    (method, seed) -> ``saliency/full/{method}/seed{k}``; tensors: scan -> ``tensor.npz``; territories:
    scan -> ``territories/{scan}.npz``, None without an atlas."""
    rows = pd.concat([method_rows(m, s, scans_by_seed[s], maps_dirs[m, s], territories)
                      for m in methods for s in seeds], ignore_index=True)
    markdown, per_seed = saliency_markdown(rows, dataset, territories is not None)
    saliency_figures(rows, maps_dirs, tensors, examples_png, search_png)
    return markdown, per_seed, rows

