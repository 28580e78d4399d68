# Thesis 003 chapter 4: the multi-task hemisphere CNN and its full-brain peers, trained per seed.


def split_tensors(wildcards):
    return expand(res("preproc/{scan}"), dataset=wildcards.dataset, scan=preprocessed_scans(wildcards.dataset))


rule train_classifier:
    input:
        split=res("splits/seed{seed}.tsv"),
        labels=res("labels.tsv"),
        tensors=split_tensors,
    output:
        weights=res("models/{model}/seed{seed}/final.pt"),
        log=res("models/{model}/seed{seed}/train_log.tsv"),
        curves=report(res("models/{model}/seed{seed}/training_curves.png"), caption="../report/training_curves.rst",
                      category="2. Classification", subcategory="{dataset}",
                      labels={"result": "4 Training curves: {model}, seed {seed}"}),
    wildcard_constraints:
        model=r"mtl|resnet18|resnet50|full_brain_cnn|vit|swin",
    params:
        model=lambda wc: wc.model,
        train_fraction=1.0,
        checkpoints=resume_state("{model}/seed{seed}"),
        settings=config["classification"]["training"],
        seed=lambda wc: int(wc.seed),
        code=script_code("train_classifier.py"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    log:
        log_path("train_classifier/{model}_seed{seed}"),
    script:
        "../scripts/train_classifier.py"


rule predict_classifier:
    input:
        weights=res("models/{model}/seed{seed}/final.pt"),
        split=res("splits/seed{seed}.tsv"),
        labels=res("labels.tsv"),
        tensors=split_tensors,
    output:
        res("predictions/{model}/seed{seed}.tsv"),
    params:
        code=script_code("predict_classifier.py"),
    log:
        log_path("predict_classifier/{model}_seed{seed}"),
    script:
        "../scripts/predict_classifier.py"


rule classification_report:
    input:
        predictions=expand(res("predictions/{model}/seed{seed}.tsv"), model=config["classification"]["models"],
                           seed=config["splits"]["seeds"], allow_missing=True),
        tensors=split_tensors,
    output:
        table=res("tables/classification.md"),
        html=report(res("tables/classification.html"), caption="../report/classification.rst",
                    category="2. Classification", subcategory="{dataset}", labels={"result": "1 Classification tables"}),
        metrics=report(res("metrics/classification.tsv"), caption="../report/classification_metrics.rst",
                       category="2. Classification", subcategory="{dataset}",
                       labels={"result": "2 Metrics per model and seed (TSV, download)"}),
        examples=report(res("figures/classification_examples.png"), caption="../report/classification_examples.rst",
                        category="2. Classification", subcategory="{dataset}",
                        labels={"result": "3 Test predictions: correct and wrong examples"}),
    params:
        code=script_code("classification_report.py"),
    log:
        log_path("classification_report"),
    script:
        "../scripts/classification_report.py"
