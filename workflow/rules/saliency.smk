# Thesis 003 chapter 5, CT datasets with labels: the spatial-latent autoencoder, saliency maps of the hemisphere
# CNN (adversarial latent counterfactuals and peers) with their hit score over arterial territories, and ACAT
# and its peers fine-tuned from the hemisphere CNN on those maps -> tables/saliency.md, tables/acat.md.
#
# A "run" is the full training split ("full") or a fraction of it for Table 5.5 ("frac0.5"): each run has its
# own baseline (the classification stage's mtl model for "full"), its own saliency maps and its own models.

from cfbrain.saliency.methods import COUNTERFACTUAL_METHODS, METHODS

AUTOENCODER = config["autoencoder"]
SALIENCY = config["saliency"]
ACAT = config["acat"]
FULL_RUN = "full"


wildcard_constraints:
    run=r"full|frac[0-9.]+",
    maps=r"[a-z_]+",


def run_fraction(run):
    """The share of the training split a run trains on: 1 for "full", 0.5 for "frac0.5"."""
    return 1.0 if run == FULL_RUN else float(run.removeprefix("frac"))


def limited_runs():
    return [f"frac{fraction:g}" for fraction in ACAT["train_fractions"]]


def baseline_weights(wildcards):
    """The run's hemisphere CNN: the classification stage's for the full split, else the limited retrain."""
    if wildcards.run == FULL_RUN:
        return res("models/mtl/seed{seed}/final.pt").format(dataset=wildcards.dataset, seed=wildcards.seed)
    return res("acat/{run}/mtl/seed{seed}/final.pt").format(**wildcards)


def saliency_inputs(wildcards):
    """Classifier (and autoencoder for the latent methods) that explain a run's scans."""
    inputs = {"classifier": baseline_weights(wildcards)}
    if wildcards.method in COUNTERFACTUAL_METHODS:
        inputs["autoencoder"] = res("models/autoencoder/seed{seed}/final.pt").format(
            dataset=wildcards.dataset, seed=wildcards.seed)
    return inputs


def territory_atlas(wildcards):
    """The template-space territory atlas: drawn from the synthetic anatomy, or the configured one."""
    if is_synthetic(wildcards.dataset):
        return res("territories/atlas.nii.gz").format(dataset=wildcards.dataset)
    return SALIENCY["territory_atlas"]


def has_territories(dataset):
    return is_synthetic(dataset) or bool(SALIENCY["territory_atlas"])


def acat_models_of_run(run):
    """(model, maps) pairs trained in ``run``: Table 5.1 and Table 5.3 on the full split, Table 5.5 on a fraction."""
    if run == FULL_RUN:
        pairs = [(model, ACAT["saliency"]) for model in ACAT["models"]]
        pairs += [(model, maps) for maps in ACAT["peer_saliency"] for model in ACAT["peer_saliency_models"]]
    else:
        pairs = [(model, ACAT["saliency"]) for model in ACAT["limited_models"]]
    return [("mtl", "none")] + list(dict.fromkeys(pairs))


def acat_predictions(wildcards):
    return [res(f"acat/{run}/predictions/{model}/{maps}/seed{seed}.tsv").format(dataset=wildcards.dataset)
            for run in [FULL_RUN, *limited_runs()] for model, maps in acat_models_of_run(run)
            for seed in config["splits"]["seeds"]]


def chapter5_targets(dataset):
    """Chapter 5's tables for a CT dataset with labels (the hemisphere CNN it explains needs them)."""
    return [f"{RESULTS}/{dataset}/tables/saliency.md", f"{RESULTS}/{dataset}/tables/acat.md"]


rule territory_atlas:
    output:
        res("territories/atlas.nii.gz"),
    params:
        code=script_code("territory_atlas.py"),
    log:
        log_path("territory_atlas"),
    script:
        "../scripts/territory_atlas.py"


rule territory_map:
    input:
        atlas=territory_atlas,
        registration=res("registration/{scan}"),
        nifti=res("nifti/{scan}"),
        tensor=res("preproc/{scan}"),
    output:
        res("territories/{scan}.npz"),
    params:
        code=script_code("territory_map.py"),
    log:
        log_path("territory_map/{scan}"),
    group:
        "per_scan"
    script:
        "../scripts/territory_map.py"


rule train_autoencoder:
    input:
        split=res("splits/seed{seed}.tsv"),
        tensors=split_tensors,
    output:
        weights=res("models/autoencoder/seed{seed}/final.pt"),
        log=res("models/autoencoder/seed{seed}/train_log.tsv"),
        curves=report(res("models/autoencoder/seed{seed}/training_curves.png"), caption="../report/autoencoder_curves.rst",
                      category="3. Saliency and ACAT", subcategory="{dataset}",
                      labels={"result": "7 Training curves: autoencoder, seed {seed}"}),
        reconstructions=report(res("models/autoencoder/seed{seed}/reconstructions.png"),
                               caption="../report/autoencoder_reconstructions.rst", category="3. Saliency and ACAT",
                               subcategory="{dataset}", labels={"result": "6 Autoencoder reconstructions, seed {seed}"}),
    params:
        checkpoints=resume_state("autoencoder/seed{seed}"),
        architecture=AUTOENCODER["architecture"],
        training=AUTOENCODER["training"],
        seed=lambda wc: int(wc.seed),
        code=script_code("train_autoencoder.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_autoencoder/seed{seed}"),
    script:
        "../scripts/train_autoencoder.py"


rule train_limited_baseline:
    input:
        split=res("splits/seed{seed}.tsv"),
        labels=res("labels.tsv"),
        tensors=split_tensors,
    output:
        weights=res("acat/{run}/mtl/seed{seed}/final.pt"),
        log=res("acat/{run}/mtl/seed{seed}/train_log.tsv"),
        curves=res("acat/{run}/mtl/seed{seed}/training_curves.png"),
    wildcard_constraints:
        run=r"frac[0-9.]+",
    params:
        model="mtl",
        train_fraction=lambda wc: run_fraction(wc.run),
        checkpoints=resume_state("{run}/mtl/seed{seed}"),
        settings=config["classification"]["training"],
        seed=lambda wc: int(wc.seed),
        code=script_code("train_classifier.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_limited_baseline/{run}_seed{seed}"),
    script:
        "../scripts/train_classifier.py"


rule saliency:
    input:
        unpack(saliency_inputs),
        split=res("splits/seed{seed}.tsv"),
        tensors=split_tensors,
    output:
        directory(res("saliency/{run}/{method}/seed{seed}")),
    wildcard_constraints:
        method="|".join(METHODS),  # the global constraint is MedEdit's methods
    params:
        architecture=AUTOENCODER["architecture"],
        settings=SALIENCY["settings"],
        code=script_code("saliency.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
    log:
        log_path("saliency/{run}_{method}_seed{seed}"),
    script:
        "../scripts/saliency.py"


rule train_acat:
    input:
        baseline=baseline_weights,
        saliency=res("saliency/{run}/{maps}/seed{seed}"),
        split=res("splits/seed{seed}.tsv"),
        labels=res("labels.tsv"),
        tensors=split_tensors,
    output:
        weights=res("acat/{run}/{model}/{maps}/seed{seed}/final.pt"),
        log=res("acat/{run}/{model}/{maps}/seed{seed}/train_log.tsv"),
        curves=report(res("acat/{run}/{model}/{maps}/seed{seed}/training_curves.png"),
                      caption="../report/acat_curves.rst", category="3. Saliency and ACAT",
                      subcategory="{dataset}", labels={"result": "8 Training curves: {model} on {maps} maps, {run}, seed {seed}"}),
    wildcard_constraints:
        model=r"acat|smic|salclassnet|hsm|hsm_saliency|spatt|seatt",
    params:
        train_fraction=lambda wc: run_fraction(wc.run),
        checkpoints=resume_state("{run}/{model}/{maps}/seed{seed}"),
        settings=ACAT["training"],
        seed=lambda wc: int(wc.seed),
        code=script_code("train_acat.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_acat/{run}_{model}_{maps}_seed{seed}"),
    script:
        "../scripts/train_acat.py"


def acat_prediction_inputs(wildcards):
    """The model's weights, and its saliency maps unless it is the baseline (maps "none")."""
    if wildcards.model == "mtl":
        return {"weights": baseline_weights(wildcards)}
    return {"weights": res("acat/{run}/{model}/{maps}/seed{seed}/final.pt").format(**wildcards),
            "saliency": res("saliency/{run}/{maps}/seed{seed}").format(**wildcards)}


rule predict_acat:
    input:
        unpack(acat_prediction_inputs),
        split=res("splits/seed{seed}.tsv"),
        labels=res("labels.tsv"),
        tensors=split_tensors,
    output:
        res("acat/{run}/predictions/{model}/{maps}/seed{seed}.tsv"),
    params:
        code=script_code("predict_classifier.py"),
    log:
        log_path("predict_acat/{run}_{model}_{maps}_seed{seed}"),
    script:
        "../scripts/predict_classifier.py"


rule preactivation_variances:
    input:
        baseline=res("models/mtl/seed{seed}/final.pt"),
        acat=lambda wc: res(f"acat/{FULL_RUN}/acat/{ACAT['saliency']}/seed{{seed}}/final.pt").format(**wc),
        saliency=lambda wc: res(f"saliency/{FULL_RUN}/{ACAT['saliency']}/seed{{seed}}").format(**wc),
        split=res("splits/seed{seed}.tsv"),
        labels=res("labels.tsv"),
        tensors=split_tensors,
    output:
        res("metrics/preactivation/seed{seed}.tsv"),
    params:
        noise_std=ACAT["noise_std"],
        seed=lambda wc: int(wc.seed),
        code=script_code("preactivation_variances.py"),
    log:
        log_path("preactivation_variances/seed{seed}"),
    script:
        "../scripts/preactivation_variances.py"


def saliency_report_inputs(wildcards):
    dataset, seeds = wildcards.dataset, config["splits"]["seeds"]
    inputs = {"maps": [res(f"saliency/{FULL_RUN}/{method}/seed{seed}").format(dataset=dataset)
                       for method in SALIENCY["methods"] for seed in seeds],
              "splits": [res(f"splits/seed{seed}.tsv").format(dataset=dataset) for seed in seeds],
              "labels": res("labels.tsv").format(dataset=dataset),
              "tensors": split_tensors(wildcards)}
    if has_territories(dataset):
        inputs["territories"] = expand(res("territories/{scan}.npz"), dataset=dataset,
                                       scan=preprocessed_scans(dataset))
    return inputs


rule saliency_report:
    input:
        unpack(saliency_report_inputs),
    output:
        table=res("tables/saliency.md"),
        html=report(res("tables/saliency.html"), caption="../report/saliency_table.rst",
                    category="3. Saliency and ACAT", subcategory="{dataset}",
                    labels={"result": "1 Saliency maps: hit score (Section 5.6.5)"}),
        metrics=res("metrics/saliency.tsv"),
        hits=res("metrics/saliency_hits.tsv"),
        examples=report(res("figures/saliency_examples.png"), caption="../report/saliency_examples.rst",
                        category="3. Saliency and ACAT", subcategory="{dataset}",
                        labels={"result": "2 Saliency maps of one scan, every method (Figure 5.4)"}),
        search=report(res("figures/saliency_search.png"), caption="../report/saliency_search.rst",
                      category="3. Saliency and ACAT", subcategory="{dataset}",
                      labels={"result": "3 Counterfactual search vs latent shift (Figure 5.5)"}),
    params:
        methods=SALIENCY["methods"],
        seeds=config["splits"]["seeds"],
        code=script_code("saliency_report.py"),
    log:
        log_path("saliency_report"),
    script:
        "../scripts/saliency_report.py"


def preactivation_tables(wildcards):
    """Table 5.6 compares the baseline with ACAT: only when ACAT is among the models."""
    if "acat" not in ACAT["models"]:
        return []
    return expand(res("metrics/preactivation/seed{seed}.tsv"), dataset=wildcards.dataset, seed=config["splits"]["seeds"])


rule acat_report:
    input:
        predictions=acat_predictions,
        variances=preactivation_tables,
    output:
        table=res("tables/acat.md"),
        html=report(res("tables/acat.html"), caption="../report/acat_table.rst", category="3. Saliency and ACAT",
                    subcategory="{dataset}", labels={"result": "4 ACAT and its peers (Tables 5.1-5.6)"}),
        metrics=report(res("metrics/acat.tsv"), caption="../report/acat_metrics.rst", category="3. Saliency and ACAT",
                       subcategory="{dataset}", labels={"result": "5 Metrics per model, maps, run and seed (TSV)"}),
    params:
        saliency=ACAT["saliency"],
        code=script_code("acat_report.py"),
    log:
        log_path("acat_report"),
    script:
        "../scripts/acat_report.py"
