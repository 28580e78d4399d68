# Thesis 003 §3.4.4 steps 6-8 (crop, pad/resize, 11 slices, HU window) and the patient-level splits.


def truth_mask_input(wildcards):
    if is_synthetic(wildcards.dataset):
        return {"truth": res("truth/{scan}_lesion.nii.gz").format(dataset=wildcards.dataset, scan=wildcards.scan)}
    return {}


rule truth_mask:
    input:
        source=f"{SOURCES}/{{dataset}}",
        index=res("index/series.tsv"),
    output:
        res("truth/{scan}_lesion.nii.gz"),
    params:
        key=lambda wc: key_path(wc.dataset),
        code=script_code("truth_mask.py"),
    log:
        log_path("truth_mask/{scan}"),
    group:
        "per_scan"
    script:
        "../scripts/truth_mask.py"


rule preprocess:
    input:
        unpack(truth_mask_input),
        nifti=res("nifti/{scan}"),
        registration=res("registration/{scan}"),
    output:
        tensor=directory(res("preproc/{scan}")),
        status=res("qc/preprocess/{scan}.tsv"),
    params:
        config=config["preprocess"],
        code=script_code("preprocess.py"),
    log:
        log_path("preprocess/{scan}"),
    group:
        "per_scan"
    script:
        "../scripts/preprocess.py"


checkpoint preprocess_qc:
    input:
        statuses=lambda wc: expand(res("qc/preprocess/{scan}.tsv"), dataset=wc.dataset, scan=registered_scans(wc.dataset)),
    output:
        table=res("qc/preprocess.tsv"),
    params:
        code=script_code("preprocess_qc.py"),
    log:
        log_path("preprocess_qc"),
    script:
        "../scripts/preprocess_qc.py"


def preprocessed_scans(dataset):
    table = checkpoint_table(checkpoints.preprocess_qc, dataset, "table")
    return sorted(table.loc[table.status == "kept", "scan"])


rule splits:
    input:
        preprocessed=res("qc/preprocess.tsv"),
        labels=lambda wc: res("labels.tsv").format(dataset=wc.dataset) if has_labels(wc.dataset) else [],
    output:
        res("splits/seed{seed}.tsv"),
    params:
        fractions=config["splits"]["fractions"],
        seed=lambda wc: int(wc.seed),
        code=script_code("splits.py"),
    log:
        log_path("splits/seed{seed}"),
    script:
        "../scripts/splits.py"


rule preprocessing_montage:
    input:
        tensors=lambda wc: expand(res("preproc/{scan}"), dataset=wc.dataset, scan=preprocessed_scans(wc.dataset)[:6]),
        niftis=lambda wc: expand(res("nifti/{scan}"), dataset=wc.dataset, scan=preprocessed_scans(wc.dataset)[:6]),
    output:
        report(res("figures/preprocessing_montage.png"), caption="../report/preprocessing_montage.rst",
               category="1. Data preparation", subcategory="{dataset}", labels={"result": "5 Preprocessing montage"}),
    params:
        scans=lambda wc: preprocessed_scans(wc.dataset)[:6],
        code=script_code("preprocessing_montage.py"),
    log:
        log_path("preprocessing_montage"),
    script:
        "../scripts/preprocessing_montage.py"
