# Thesis 000 (MedEdit), datasets with modality mri: one axial slice per scan -> conditional DDPMs (one per
# training seed of mededit.seeds), lesion segmenter and FID features trained on the training split ->
# counterfactuals of the test split per method and seed -> scores per seed -> tables/mededit.md (mean ± standard
# error over seeds) and the Figure 5.1 grid (first seed).

from cfbrain.mededit.methods import ablation_methods, parse_method

MRI = config.get("mri", {})
MEDEDIT = config.get("mededit", {})
METHOD_REGEX = r"(palette|naive_repaint|sdedit|mededit)(_box)?(_k[0-9]+)?(_u[0-9]+)?"


def mededit_methods():
    """The configured methods, then the ablation settings, without repeats (in the tables' order); none when
    the config has no MRI dataset (the schema then allows leaving the mededit section out)."""
    names = figure_methods()
    settings = ablation_methods()
    for ablation in MEDEDIT.get("ablations", []):
        names += settings[ablation].values()
    return list(dict.fromkeys(names))


def figure_methods():
    """Methods in the figure grid: the configured ones (ablations only in the tables)."""
    return list(MEDEDIT.get("methods", []))


def mededit_seeds():
    """Training seeds of the denoisers (and the sampler noise and FID bootstrap of their runs)."""
    return list(MEDEDIT.get("seeds", []))


def is_synthetic_mri(dataset):
    return source_config(dataset)["kind"] == "synthetic_mri"


def pairings(dataset):
    """Triplet pairings: random (thesis protocol) everywhere, counterpart where the truth is known."""
    return ["random", "counterpart"] if is_synthetic_mri(dataset) else ["random"]


def mri_source_root(wildcards):
    dataset = wildcards.dataset
    return f"{SOURCES}/{dataset}" if is_synthetic_mri(dataset) else source_config(dataset)["path"]


def mri_source_input(wildcards):
    """A synthetic cohort is a rule output; a user's dataset is tracked by ``mri_source_state``."""
    return {"source": mri_source_root(wildcards)} if is_synthetic_mri(wildcards.dataset) else {}


def mri_source_state(wildcards):
    return "synthetic" if is_synthetic_mri(wildcards.dataset) else tree_state(mri_source_root(wildcards))


def feature_weights(wildcards):
    """The trained feature autoencoder, unless RadImageNet weights are configured."""
    return {} if MEDEDIT["features"]["radimagenet_weights"] else {"features": res("models/feature_ae/final.pt")}


def segmenter_backend():
    return MEDEDIT.get("segmenter", {}).get("backend", "monai")


def segmenter_weights(wildcards):
    """The trained MONAI segmenter; nothing with the nnU-Net backend (the user's trained model is a param)."""
    return {} if segmenter_backend() == "nnunet" else {"segmenter": res("models/segmenter/final.pt")}


def mri_targets(dataset):
    root = f"{RESULTS}/{dataset}"
    return [f"{root}/qc/mri_slices.tsv", f"{root}/tables/mededit.md"] + [
        f"{root}/figures/mededit_{pairing}.png" for pairing in pairings(dataset)]


wildcard_constraints:
    network=r"(mededit|palette)(_box)?",
    pairing=r"random|counterpart",
    seed=r"[0-9]+",
    method=METHOD_REGEX,


rule synth_mri:
    output:
        directory(f"{SOURCES}/{{dataset}}"),
    wildcard_constraints:
        dataset=datasets_regex(lambda name: is_mri(name) and is_synthetic_mri(name)),
    params:
        source=lambda wc: source_config(wc.dataset),
        code=script_code("synth_mri.py"),
    threads: 2
    log:
        log_path("synth_mri"),
    script:
        "../scripts/synth_mri.py"


rule mri_slices:
    input:
        unpack(mri_source_input),
    output:
        slices=res("mri/slices.npz"),
        table=res("qc/mri_slices.tsv"),
    wildcard_constraints:
        dataset=datasets_regex(is_mri),
    params:
        kind=lambda wc: source_config(wc.dataset)["kind"],
        lesion=lambda wc: source_config(wc.dataset).get("lesion"),
        root=mri_source_root,
        state=mri_source_state,
        size=MRI.get("size"),
        code=script_code("mri_slices.py"),
    log:
        log_path("mri_slices"),
    script:
        "../scripts/mri_slices.py"


rule mri_truth:
    input:
        source=f"{SOURCES}/{{dataset}}",
    output:
        res("mri/truth.npz"),
    params:
        lesion=lambda wc: source_config(wc.dataset)["lesion"],
        size=MRI.get("size"),
        code=script_code("mri_truth.py"),
    log:
        log_path("mri_truth"),
    script:
        "../scripts/mri_truth.py"


rule mri_splits:
    input:
        table=res("qc/mri_slices.tsv"),
    output:
        res("mri/splits.tsv"),
    params:
        seed=MRI.get("split_seed"),
        fractions=MRI.get("split_fractions"),
        code=script_code("mri_splits.py"),
    log:
        log_path("mri_splits"),
    script:
        "../scripts/mri_splits.py"


rule train_ddpm:
    input:
        slices=res("mri/slices.npz"),
        splits=res("mri/splits.tsv"),
    output:
        weights=res("models/ddpm_{network}/seed{seed}/final.pt"),
        log=res("models/ddpm_{network}/seed{seed}/train_log.tsv"),
        curves=report(res("models/ddpm_{network}/seed{seed}/training_curves.png"),
                      caption="../report/mri_training_curves.rst",
                      category="5. MedEdit", subcategory="{dataset}",
                      labels={"result": "5 Training curves: DDPM {network}, seed {seed}"}),
    params:
        checkpoints=resume_state("ddpm_{network}/seed{seed}"),
        unet=MEDEDIT.get("ddpm", {}).get("unet"),
        training=MEDEDIT.get("ddpm", {}).get("training"),
        seed=lambda wc: int(wc.seed),
        code=script_code("train_ddpm.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_ddpm/{network}_seed{seed}"),
    script:
        "../scripts/train_ddpm.py"


rule train_segmenter:
    input:
        slices=res("mri/slices.npz"),
        splits=res("mri/splits.tsv"),
    output:
        weights=res("models/segmenter/final.pt"),
        log=res("models/segmenter/train_log.tsv"),
        curves=report(res("models/segmenter/training_curves.png"), caption="../report/mri_training_curves.rst",
                      category="5. MedEdit", subcategory="{dataset}",
                      labels={"result": "6 Training curves: lesion segmenter"}),
    params:
        checkpoints=resume_state("segmenter"),
        network=MEDEDIT.get("segmenter", {}).get("network"),
        training=MEDEDIT.get("segmenter", {}).get("training"),
        seed=lambda wc: MEDEDIT["segmenter"]["training"].get("seed", 0),
        code=script_code("train_segmenter.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
    log:
        log_path("train_segmenter"),
    script:
        "../scripts/train_segmenter.py"


rule train_feature_ae:
    input:
        slices=res("mri/slices.npz"),
        splits=res("mri/splits.tsv"),
    output:
        weights=res("models/feature_ae/final.pt"),
        log=res("models/feature_ae/train_log.tsv"),
        curves=report(res("models/feature_ae/training_curves.png"), caption="../report/mri_training_curves.rst",
                      category="5. MedEdit", subcategory="{dataset}",
                      labels={"result": "7 Training curves: FID/KID feature autoencoder"}),
    params:
        checkpoints=resume_state("feature_ae"),
        autoencoder=MEDEDIT.get("features", {}).get("autoencoder"),
        training=MEDEDIT.get("features", {}).get("training"),
        seed=lambda wc: MEDEDIT["features"]["training"].get("seed", 0),
        code=script_code("train_feature_ae.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
    log:
        log_path("train_feature_ae"),
    script:
        "../scripts/train_feature_ae.py"


rule nnunet_dataset:
    """The training split in nnU-Net v2's raw layout, for users who train nnU-Net as the Dice segmenter
    (cfbrain.mededit.nnunet); not part of the default targets."""
    input:
        slices=res("mri/slices.npz"),
        splits=res("mri/splits.tsv"),
    output:
        directory(res("nnunet/raw")),
    params:
        code=script_code("nnunet_dataset.py"),
    log:
        log_path("nnunet_dataset"),
    script:
        "../scripts/nnunet_dataset.py"


rule mededit_triplets:
    input:
        slices=res("mri/slices.npz"),
        splits=res("mri/splits.tsv"),
        truth=lambda wc: res("mri/truth.npz") if wc.pairing == "counterpart" else [],
    output:
        res("counterfactuals/{pairing}/triplets.npz"),
    params:
        seed=MEDEDIT.get("triplet_seed"),
        code=script_code("mededit_triplets.py"),
    log:
        log_path("mededit_triplets/{pairing}"),
    script:
        "../scripts/mededit_triplets.py"


rule mededit_run:
    input:
        triplets=res("counterfactuals/{pairing}/triplets.npz"),
        weights=lambda wc: res(f"models/ddpm_{parse_method(wc.method).network}/seed{wc.seed}/final.pt"),
    output:
        res("counterfactuals/{pairing}/seed{seed}/{method}.npz"),
    params:
        unet=MEDEDIT.get("ddpm", {}).get("unet"),
        sampling=MEDEDIT.get("sampling"),
        seed=lambda wc: int(wc.seed),
        code=script_code("mededit_run.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
    log:
        log_path("mededit_run/{pairing}_seed{seed}_{method}"),
    script:
        "../scripts/mededit_run.py"


rule mededit_score:
    input:
        unpack(feature_weights),
        unpack(segmenter_weights),
        counterfactuals=expand(res("counterfactuals/{pairing}/seed{seed}/{method}.npz"), method=mededit_methods(),
                               allow_missing=True),
        triplets=res("counterfactuals/{pairing}/triplets.npz"),
        slices=res("mri/slices.npz"),
        splits=res("mri/splits.tsv"),
    output:
        summary=res("metrics/mededit/seed{seed}/{pairing}.tsv"),
        images=res("metrics/mededit/seed{seed}/{pairing}_images.tsv"),
    params:
        segmenter=MEDEDIT.get("segmenter"),
        segmenter_backend=segmenter_backend(),
        autoencoder=MEDEDIT.get("features", {}).get("autoencoder"),
        radimagenet_weights=MEDEDIT.get("features", {}).get("radimagenet_weights"),
        evaluation=MEDEDIT.get("evaluation"),
        seed=lambda wc: int(wc.seed),
        code=script_code("mededit_score.py"),
    log:
        log_path("mededit_score/{pairing}_seed{seed}"),
    script:
        "../scripts/mededit_score.py"


rule mededit_table:
    input:
        summaries=lambda wc: expand(res("metrics/mededit/seed{seed}/{pairing}.tsv"), dataset=wc.dataset,
                                    pairing=pairings(wc.dataset), seed=mededit_seeds()),
    output:
        table=res("tables/mededit.md"),
        html=report(res("tables/mededit.html"), caption="../report/mededit_table.rst", category="5. MedEdit",
                    subcategory="{dataset}", labels={"result": "1 MedEdit tables (Tables 5.1-5.8)"}),
        metrics=report(res("metrics/mededit.tsv"), caption="../report/mededit_metrics.rst", category="5. MedEdit",
                       subcategory="{dataset}", labels={"result": "2 Scores per method and pairing (TSV, download)"}),
    params:
        code=script_code("mededit_table.py"),
    log:
        log_path("mededit_table"),
    script:
        "../scripts/mededit_table.py"


rule mededit_figure:
    input:
        triplets=res("counterfactuals/{pairing}/triplets.npz"),
        counterfactuals=expand(res("counterfactuals/{pairing}/seed{seed}/{method}.npz"), method=figure_methods(),
                               seed=mededit_seeds()[:1], allow_missing=True),
    output:
        report(res("figures/mededit_{pairing}.png"), caption="../report/mededit_figure.rst", category="5. MedEdit",
               subcategory="{dataset}", labels={"result": "3 Counterfactuals and difference maps: {pairing} pairing"}),
    params:
        n_examples=MEDEDIT.get("evaluation", {}).get("n_examples"),
        code=script_code("mededit_figure.py"),
    log:
        log_path("mededit_figure/{pairing}"),
    script:
        "../scripts/mededit_figure.py"
