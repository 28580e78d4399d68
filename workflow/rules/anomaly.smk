# Thesis 003 chapter 6 (Dif-fuse), datasets in the "difuse" track: slices (qc/anomaly_slices.tsv: every case
# kept or why not) -> splits by subject per seed -> a healthy-only DDPM per seed (and on MRI a slice classifier
# and plane autoencoder for the saliency maps; on CT chapter 5's maps) -> Dif-fuse and its ablations on the
# evaluation slices -> scores per seed -> tables/anomaly.md (Table 6.1) and Figures 6.2/6.4-6.7.
#
# Dataset roles: a BraTS-like MRI dataset (source kinds brats2021, synthetic_mri with contrasts) trains the
# models and chooses K and the saliency percentile on its validation slices (Figure 6.6); a WMH-like dataset
# (wmh, synthetic_wmh) names that dataset in `models_from` and is scored out of domain with its models; a CT
# dataset with labels (tracks: [difuse]) has its own DDPM and chapter 5's maps and is scored by KID.

from cfbrain.anomaly.methods import METHODS as ANOMALY_METHODS

ANOMALY = config.get("anomaly", {})
WMH_SOURCE_KINDS = ("wmh", "synthetic_wmh")


def dataset_tracks(dataset):
    """The chapters a dataset feeds: its ``tracks`` key, else MedEdit for MRI (Dif-fuse for the chapter-6-only
    source kinds) and none beyond chapters 4-5 for CT."""
    if "tracks" in DATASETS[dataset]:
        return DATASETS[dataset]["tracks"]
    if not is_mri(dataset):
        return []
    return ["difuse"] if source_config(dataset)["kind"] in (*WMH_SOURCE_KINDS, "brats2021") else ["mededit"]


def is_difuse(dataset):
    return "difuse" in dataset_tracks(dataset)


def is_wmh(dataset):
    return source_config(dataset)["kind"] in WMH_SOURCE_KINDS


def anomaly_role(dataset):
    """"brats" (trains, chooses K and the percentile), "wmh" (out of domain) or "ct" (KID)."""
    return "ct" if not is_mri(dataset) else "wmh" if is_wmh(dataset) else "brats"


def models_dataset(dataset):
    """The dataset whose models a dataset's runs use: itself, or the BraTS-like one a WMH dataset names."""
    return DATASETS[dataset].get("models_from", dataset)


def difuse_datasets(role):
    return [name for name in DATASETS if is_difuse(name) and anomaly_role(name) == role]


def wmh_datasets_of(dataset):
    return [name for name in difuse_datasets("wmh") if models_dataset(name) == dataset]


for _name in DATASETS:
    _tracks, _kind = dataset_tracks(_name), source_config(_name)["kind"]
    if "mededit" in _tracks and _kind not in ("synthetic_mri", "atlas", "brats"):
        raise WorkflowError(f"dataset {_name}: source kind {_kind} feeds the difuse track only (tracks: [difuse])")
    if "difuse" in _tracks and is_mri(_name) and _kind in ("atlas", "brats"):
        raise WorkflowError(f"dataset {_name}: chapter 6 reads brats2021, wmh, synthetic_mri or synthetic_wmh sources")
    if "difuse" in _tracks and not is_mri(_name) and not has_labels(_name):
        raise WorkflowError(f"dataset {_name}: chapter 6 on CT needs labels (healthy training = negative scans)")
    if "difuse" in _tracks and _kind == "synthetic_mri" and not source_config(_name).get("contrasts"):
        raise WorkflowError(f"dataset {_name}: chapter 6 needs the four contrasts (source contrasts: [flair, t1, t1gd, t2])")
    if is_difuse(_name) and is_wmh(_name):
        _models = DATASETS[_name].get("models_from")
        if _models not in DATASETS or not is_difuse(_models) or anomaly_role(_models) != "brats":
            raise WorkflowError(f"dataset {_name}: models_from must name a BraTS-like dataset of the difuse track")
    if is_difuse(_name) and not is_mri(_name) and not set(ANOMALY["seeds"]) <= set(config["splits"]["seeds"]):
        raise WorkflowError(f"dataset {_name}: anomaly seeds {ANOMALY['seeds']} must be among splits seeds "
                            f"(chapter 5's maps exist per split seed)")
for _name in DATASETS:
    if is_difuse(_name) and anomaly_role(_name) == "brats" and len(wmh_datasets_of(_name)) > 1:
        raise WorkflowError(f"dataset {_name}: more than one WMH dataset names it in models_from")


def anomaly_seeds():
    return list(ANOMALY.get("seeds", []))


def anomaly_methods():
    return list(ANOMALY.get("methods", []))


def model_path(path):
    """Input function: ``path`` under results/ of the dataset whose models the wildcards' dataset uses."""
    return lambda wc: f"{RESULTS}/{models_dataset(wc.dataset)}/{path.format(**wc)}"


def anomaly_source_root(wildcards):
    source = source_config(wildcards.dataset)
    if source["kind"] == "synthetic_mri":
        return f"{SOURCES}/{wildcards.dataset}"
    if source["kind"] == "synthetic_wmh":
        return f"{SOURCES}/{source['cohort']}"
    return source["path"]


def anomaly_source_input(wildcards):
    """A synthetic cohort is a rule output (synth_mri; a WMH-like one is the ``cohort`` dataset's); a user's
    dataset is tracked by ``anomaly_source_state``."""
    kind = source_config(wildcards.dataset)["kind"]
    return {"source": anomaly_source_root(wildcards)} if kind.startswith("synthetic") else {}


def anomaly_source_state(wildcards):
    kind = source_config(wildcards.dataset)["kind"]
    return "synthetic" if kind.startswith("synthetic") else tree_state(anomaly_source_root(wildcards))


def anomaly_table_inputs(wildcards):
    """Per role, the per-seed scores of the datasets in the table (module header)."""
    return {role: expand(f"{RESULTS}/{name}/metrics/anomaly/seed{{seed}}.tsv", seed=anomaly_seeds())
            for role, name in table_datasets(wildcards.dataset).items()}


def table_datasets(dataset):
    """Role -> dataset of a dataset's Table 6.1: a BraTS-like dataset with its WMH dataset and the CT dataset
    when the difuse track has exactly one; a CT dataset alone."""
    if anomaly_role(dataset) == "ct":
        return {"ct": dataset}
    datasets = {"brats": dataset, **{"wmh": name for name in wmh_datasets_of(dataset)}}
    if len(difuse_datasets("ct")) == 1:
        datasets["ct"] = difuse_datasets("ct")[0]
    return datasets


def anomaly_targets(dataset):
    root = f"{RESULTS}/{dataset}"
    targets = [f"{root}/qc/anomaly_slices.tsv", f"{root}/figures/anomaly_methods.png",
               f"{root}/figures/anomaly_healthy.png"]
    if anomaly_role(dataset) != "wmh":
        targets.append(f"{root}/tables/anomaly.md")
    if anomaly_role(dataset) == "brats":
        targets += [f"{root}/figures/anomaly_grid.png", f"{root}/figures/anomaly_depths.png"]
    return targets


rule anomaly_slices:
    input:
        unpack(anomaly_source_input),
    output:
        slices=res("anomaly/slices.npz"),
        table=report(res("qc/anomaly_slices.tsv"), caption="../report/anomaly_slices.rst", category="4. Dif-fuse",
                     subcategory="{dataset}", labels={"result": "9 Cases kept or excluded (slices, TSV)"}),
    wildcard_constraints:
        dataset=datasets_regex(lambda name: is_difuse(name) and is_mri(name)),
    params:
        kind=lambda wc: source_config(wc.dataset)["kind"],
        root=anomaly_source_root,
        state=anomaly_source_state,
        size=ANOMALY.get("size"),
        synthetic_drop_slices=ANOMALY.get("synthetic_drop_slices"),
        code=script_code("anomaly_slices.py"),
    log:
        log_path("anomaly_slices"),
    script:
        "../scripts/anomaly_slices.py"


rule anomaly_ct_slices:
    input:
        tensors=split_tensors,
    output:
        slices=res("anomaly/slices.npz"),
        table=report(res("qc/anomaly_slices.tsv"), caption="../report/anomaly_slices.rst", category="4. Dif-fuse",
                     subcategory="{dataset}", labels={"result": "9 Cases kept or excluded (slices, TSV)"}),
    wildcard_constraints:
        dataset=datasets_regex(lambda name: is_difuse(name) and not is_mri(name)),
    params:
        size=ANOMALY.get("size"),
        code=script_code("anomaly_ct_slices.py"),
    log:
        log_path("anomaly_ct_slices"),
    script:
        "../scripts/anomaly_ct_slices.py"


def ct_split_input(wildcards):
    """CT: the CT dataset's split of the seed (by patient), whose scans and labels chapter 6 keeps."""
    return {} if is_mri(wildcards.dataset) else {"ct_split": res("splits/seed{seed}.tsv").format(**wildcards)}


rule anomaly_splits:
    input:
        unpack(ct_split_input),
        slices=res("anomaly/slices.npz"),
    output:
        res("anomaly/splits/seed{seed}.tsv"),
    params:
        seed=lambda wc: int(wc.seed),
        fractions=ANOMALY.get("split_fractions"),
        code=script_code("anomaly_splits.py"),
    log:
        log_path("anomaly_splits/seed{seed}"),
    script:
        "../scripts/anomaly_splits.py"


rule train_healthy_ddpm:
    input:
        slices=res("anomaly/slices.npz"),
        splits=res("anomaly/splits/seed{seed}.tsv"),
    output:
        weights=res("models/healthy_ddpm/seed{seed}/final.pt"),
        log=res("models/healthy_ddpm/seed{seed}/train_log.tsv"),
        curves=report(res("models/healthy_ddpm/seed{seed}/training_curves.png"),
                      caption="../report/anomaly_training_curves.rst", category="4. Dif-fuse",
                      subcategory="{dataset}", labels={"result": "7 Training curves: healthy DDPM, seed {seed}"}),
    params:
        checkpoints=resume_state("healthy_ddpm/seed{seed}"),
        unet=ANOMALY.get("unet"),
        training=ANOMALY.get("healthy_ddpm"),
        seed=lambda wc: int(wc.seed),
        code=script_code("train_healthy_ddpm.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
    log:
        log_path("train_healthy_ddpm/seed{seed}"),
    script:
        "../scripts/train_healthy_ddpm.py"


rule train_slice_classifier:
    input:
        slices=res("anomaly/slices.npz"),
        splits=res("anomaly/splits/seed{seed}.tsv"),
    output:
        weights=res("models/slice_classifier/seed{seed}/final.pt"),
        log=res("models/slice_classifier/seed{seed}/train_log.tsv"),
        curves=report(res("models/slice_classifier/seed{seed}/training_curves.png"),
                      caption="../report/anomaly_training_curves.rst", category="4. Dif-fuse",
                      subcategory="{dataset}", labels={"result": "8 Training curves: slice classifier, seed {seed}"}),
    params:
        checkpoints=resume_state("slice_classifier/seed{seed}"),
        training=ANOMALY.get("classifier"),
        seed=lambda wc: int(wc.seed),
        code=script_code("train_slice_classifier.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_slice_classifier/seed{seed}"),
    script:
        "../scripts/train_slice_classifier.py"


rule train_plane_autoencoder:
    input:
        slices=res("anomaly/slices.npz"),
        splits=res("anomaly/splits/seed{seed}.tsv"),
    output:
        weights=res("models/plane_autoencoder/seed{seed}/final.pt"),
        log=res("models/plane_autoencoder/seed{seed}/train_log.tsv"),
        curves=res("models/plane_autoencoder/seed{seed}/training_curves.png"),
    params:
        checkpoints=resume_state("plane_autoencoder/seed{seed}"),
        architecture=ANOMALY.get("autoencoder", {}).get("architecture"),
        training=ANOMALY.get("autoencoder", {}).get("training"),
        seed=lambda wc: int(wc.seed),
        code=script_code("train_plane_autoencoder.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_plane_autoencoder/seed{seed}"),
    script:
        "../scripts/train_plane_autoencoder.py"


rule train_kid_autoencoder:
    input:
        slices=res("anomaly/slices.npz"),
        splits=res("anomaly/splits/seed{seed}.tsv"),
    output:
        weights=res("models/kid_autoencoder/seed{seed}/final.pt"),
        log=res("models/kid_autoencoder/seed{seed}/train_log.tsv"),
        curves=res("models/kid_autoencoder/seed{seed}/training_curves.png"),
    params:
        checkpoints=resume_state("kid_autoencoder/seed{seed}"),
        training=ANOMALY.get("kid_autoencoder"),
        seed=lambda wc: int(wc.seed),
        code=script_code("train_kid_autoencoder.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_kid_autoencoder/seed{seed}"),
    script:
        "../scripts/train_kid_autoencoder.py"


def anomaly_saliency_inputs(wildcards):
    """CT: chapter 5's maps of the seed; MRI: the slice classifier and plane autoencoder (of ``models_from``)."""
    if not is_mri(wildcards.dataset):
        return {"ct_maps": res(f"saliency/{FULL_RUN}/{ACAT['saliency']}/seed{{seed}}").format(**wildcards)}
    return {"classifier": model_path("models/slice_classifier/seed{seed}/final.pt")(wildcards),
            "autoencoder": model_path("models/plane_autoencoder/seed{seed}/final.pt")(wildcards)}


rule anomaly_saliency:
    input:
        unpack(anomaly_saliency_inputs),
        slices=res("anomaly/slices.npz"),
        splits=res("anomaly/splits/seed{seed}.tsv"),
    output:
        res("anomaly/saliency/seed{seed}.npz"),
    params:
        max_slices=ANOMALY.get("evaluation", {}).get("max_slices"),
        architecture=ANOMALY.get("autoencoder", {}).get("architecture"),
        settings=config["saliency"]["settings"],
        code=script_code("anomaly_saliency.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("anomaly_saliency/seed{seed}"),
    script:
        "../scripts/anomaly_saliency.py"


def grid_seed():
    """The K x percentile grid runs on the first seed's model; its choice holds for every seed."""
    return anomaly_seeds()[0]


def grid_inputs(wildcards):
    return {name: res(path.format(seed=grid_seed())).format(**wildcards) for name, path in
            (("splits", "anomaly/splits/seed{seed}.tsv"), ("saliency", "anomaly/saliency/seed{seed}.npz"),
             ("weights", "models/healthy_ddpm/seed{seed}/final.pt"))}


rule anomaly_grid:
    input:
        unpack(grid_inputs),
        slices=res("anomaly/slices.npz"),
    output:
        grid=res("metrics/anomaly/grid.tsv"),
        heatmap=report(res("figures/anomaly_grid.png"), caption="../report/anomaly_grid.rst", category="4. Dif-fuse",
                       subcategory="{dataset}", labels={"result": "5 Validation Dice over K x percentile (Figure 6.6)"}),
        depths=report(res("figures/anomaly_depths.png"), caption="../report/anomaly_depths.rst",
                      category="4. Dif-fuse", subcategory="{dataset}",
                      labels={"result": "6 Dif-fuse per K (Figure 6.7)"}),
    params:
        unet=ANOMALY.get("unet"),
        difuse=ANOMALY.get("difuse"),
        inversion_depths=ANOMALY.get("grid", {}).get("inversion_depths"),
        percentiles=ANOMALY.get("grid", {}).get("percentiles"),
        max_slices=ANOMALY.get("evaluation", {}).get("max_slices"),
        n_examples=ANOMALY.get("evaluation", {}).get("n_examples"),
        code=script_code("anomaly_grid.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("anomaly_grid"),
    script:
        "../scripts/anomaly_grid.py"


def anomaly_run_inputs(wildcards):
    """The healthy DDPM of ``models_from``; on MRI the grid's chosen K and percentile (BraTS-like dataset)."""
    inputs = {"weights": model_path("models/healthy_ddpm/seed{seed}/final.pt")(wildcards)}
    if is_mri(wildcards.dataset):
        inputs["grid"] = f"{RESULTS}/{models_dataset(wildcards.dataset)}/metrics/anomaly/grid.tsv"
    return inputs


rule anomaly_run:
    input:
        unpack(anomaly_run_inputs),
        slices=res("anomaly/slices.npz"),
        saliency=res("anomaly/saliency/seed{seed}.npz"),
    output:
        res("anomaly/runs/seed{seed}/{approach}.npz"),
    wildcard_constraints:
        approach="|".join(ANOMALY_METHODS),
    params:
        unet=ANOMALY.get("unet"),
        difuse=ANOMALY.get("difuse"),
        code=script_code("anomaly_run.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("anomaly_run/seed{seed}_{approach}"),
    script:
        "../scripts/anomaly_run.py"


def kid_weights(wildcards):
    """CT without Inception v3 weights: the in-domain KID autoencoder of the seed."""
    if is_mri(wildcards.dataset) or ANOMALY["evaluation"]["inception_weights"]:
        return {}
    return {"kid_autoencoder": res("models/kid_autoencoder/seed{seed}/final.pt").format(**wildcards)}


rule anomaly_score:
    input:
        unpack(kid_weights),
        runs=expand(res("anomaly/runs/seed{seed}/{approach}.npz"), approach=anomaly_methods(), allow_missing=True),
        slices=res("anomaly/slices.npz"),
        splits=res("anomaly/splits/seed{seed}.tsv"),
    output:
        res("metrics/anomaly/seed{seed}.tsv"),
    params:
        methods=anomaly_methods(),
        ct=lambda wc: not is_mri(wc.dataset),
        max_slices=ANOMALY.get("evaluation", {}).get("max_slices"),
        inception_weights=ANOMALY.get("evaluation", {}).get("inception_weights"),
        code=script_code("anomaly_score.py"),
    log:
        log_path("anomaly_score/seed{seed}"),
    script:
        "../scripts/anomaly_score.py"


rule anomaly_table:
    input:
        unpack(anomaly_table_inputs),
    output:
        table=res("tables/anomaly.md"),
        html=report(res("tables/anomaly.html"), caption="../report/anomaly_table.rst", category="4. Dif-fuse",
                    subcategory="{dataset}", labels={"result": "1 Dif-fuse and its ablations (Table 6.1)"}),
        metrics=report(res("metrics/anomaly.tsv"), caption="../report/anomaly_metrics.rst", category="4. Dif-fuse",
                       subcategory="{dataset}", labels={"result": "2 Scores per method and seed (TSV)"}),
    params:
        roles=lambda wc: list(table_datasets(wc.dataset)),
        datasets=lambda wc: table_datasets(wc.dataset),
        methods=anomaly_methods(),
        code=script_code("anomaly_table.py"),
    log:
        log_path("anomaly_table"),
    script:
        "../scripts/anomaly_table.py"


rule anomaly_figures:
    input:
        runs=lambda wc: expand(res(f"anomaly/runs/seed{anomaly_seeds()[0]}/{{approach}}.npz"), dataset=wc.dataset,
                               approach=anomaly_methods()),
        slices=res("anomaly/slices.npz"),
        splits=lambda wc: res(f"anomaly/splits/seed{anomaly_seeds()[0]}.tsv").format(**wc),
    output:
        methods=report(res("figures/anomaly_methods.png"), caption="../report/anomaly_methods.rst",
                       category="4. Dif-fuse", subcategory="{dataset}",
                       labels={"result": "3 Counterfactuals and anomaly maps per method (Figures 6.2, 6.4)"}),
        healthy=report(res("figures/anomaly_healthy.png"), caption="../report/anomaly_healthy.rst",
                       category="4. Dif-fuse", subcategory="{dataset}",
                       labels={"result": "4 Dif-fuse on healthy slices (Figure 6.5)"}),
    params:
        methods=anomaly_methods(),
        ct=lambda wc: not is_mri(wc.dataset),
        max_slices=ANOMALY.get("evaluation", {}).get("max_slices"),
        n_examples=ANOMALY.get("evaluation", {}).get("n_examples"),
        code=script_code("anomaly_figures.py"),
    log:
        log_path("anomaly_figures"),
    script:
        "../scripts/anomaly_figures.py"
