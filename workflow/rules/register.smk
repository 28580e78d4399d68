# Thesis 003 §3.4.4 step 5: template -> CT registration per kept scan, then the cohort PCA + GMM check.


def template_files(wildcards):
    return expand(res("registration/templates/t{index}.nii.gz"), dataset=wildcards.dataset,
                  index=range(len(config["registration"]["templates"])))


def template_entries(wildcards):
    """The config's age-indexed template list with paths replaced by the files the template rule wrote."""
    return [{**entry, "path": path} for entry, path in zip(config["registration"]["templates"], template_files(wildcards))]


rule template:
    output:
        res("registration/templates/t{index}.nii.gz"),
    params:
        source=lambda wc: config["registration"]["templates"][int(wc.index)]["path"],
        code=script_code("template.py"),
    log:
        log_path("template/t{index}"),
    script:
        "../scripts/template.py"


rule register:
    input:
        nifti=res("nifti/{scan}"),
        dicom=res("dicom/{scan}"),
        templates=template_files,
    output:
        registration=directory(res("registration/{scan}")),
        status=res("qc/register/{scan}.tsv"),
    params:
        templates=template_entries,
        backend=config["registration"]["backend"],
        code=script_code("register.py"),
    threads: 1
    resources:
        mem_mb=2000,
    log:
        log_path("register/{scan}"),
    group:
        "per_scan"
    script:
        "../scripts/register.py"


def registration_review(wildcards):
    review = DATASETS[wildcards.dataset].get("registration_review")
    return {"review": review} if review else {}


checkpoint registration_qc:
    input:
        unpack(registration_review),
        registrations=lambda wc: expand(res("registration/{scan}"), dataset=wc.dataset, scan=kept_scans(wc.dataset)),
        niftis=lambda wc: expand(res("nifti/{scan}"), dataset=wc.dataset, scan=kept_scans(wc.dataset)),
        statuses=lambda wc: expand(res("qc/register/{scan}.tsv"), dataset=wc.dataset, scan=kept_scans(wc.dataset)),
    output:
        table=res("qc/registration.tsv"),
        clusters=res("qc/registration_clusters.tsv"),
        scatter=report(res("figures/registration_qc.png"), caption="../report/registration_qc.rst",
                       category="1. Data preparation", subcategory="{dataset}",
                       labels={"result": "3 Registration QC: clusters of the registrations"}),
        montages=report(directory(res("figures/registration_clusters")), patterns=["{cluster}.png"],
                        caption="../report/registration_montage.rst", category="1. Data preparation",
                        subcategory="{dataset}", labels={"result": "4 Registration QC: {cluster} examples"}),
    params:
        scans=lambda wc: kept_scans(wc.dataset),
        qc=config["registration"]["qc"],
        code=script_code("registration_qc.py"),
    log:
        log_path("registration_qc"),
    script:
        "../scripts/registration_qc.py"


def registered_scans(dataset):
    """Scans whose registration the QC accepted (after the registration_qc checkpoint)."""
    table = checkpoint_table(checkpoints.registration_qc, dataset, "table")
    return sorted(table.loc[table.verdict == "accept", "scan"])
