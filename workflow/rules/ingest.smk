# Thesis 003 §3.4.4 steps 1-4: index, export with pseudonyms, axial filter, dcm2niix, exclusions.
# Raw identifiers and source paths exist only in the index job and under PRIVATE/.
from cfbrain.convert.bone import SHIPPED_KERNEL_TABLE


def kernel_table(wildcards):
    """The user's kernel table (ingest.kernel_table), else the one shipped in resources/."""
    return config["ingest"]["kernel_table"] or str(SHIPPED_KERNEL_TABLE)


checkpoint index:
    input:
        unpack(index_input),
        kernel_table=kernel_table,
    output:
        series=res("index/series.tsv"),
        files=res("index/files.tsv"),
        manifest=f"{PRIVATE}/{{dataset}}/source_manifest.tsv",
        pseudonym_map=f"{PRIVATE}/{{dataset}}/pseudonym_map.json",
    params:
        source_dir=lambda wc: source_dicom_dir(wc.dataset),  # recorded as a keyed digest (Job.private_params)
        private=PRIVATE,
        source_state=index_source_state,
        key=lambda wc: key_path(wc.dataset),
        rules=ingest_params("axial_max_angle_deg", "localiser_image_types", "bone_image_types", "bone_description_words"),
        code=script_code("index.py"),
    log:
        log_path("index"),
    script:
        "../scripts/index.py"


rule export_series:
    output:
        directory(res("dicom/{scan}")),
    params:
        manifest=f"{PRIVATE}/{{dataset}}/source_manifest.tsv",
        key=lambda wc: key_path(wc.dataset),
        source_state=export_source_state,
        code=script_code("export_series.py"),
    log:
        log_path("export_series/{scan}"),
    group:
        "per_scan"
    script:
        "../scripts/export_series.py"


rule convert:
    input:
        dicom=res("dicom/{scan}"),
    output:
        nifti=directory(res("nifti/{scan}")),
        status=res("qc/convert/{scan}.tsv"),
    params:
        rules=ingest_params("localiser_below", "review_below"),
        max_noise_hu=config["ingest"]["bone_noise_max_hu"],
        code=script_code("convert.py"),
    log:
        log_path("convert/{scan}"),
    group:
        "per_scan"
    script:
        "../scripts/convert.py"


checkpoint ingest_qc:
    input:
        unpack(review_input),
        series=res("index/series.tsv"),
        files=res("index/files.tsv"),
        statuses=lambda wc: expand(res("qc/convert/{scan}.tsv"), dataset=wc.dataset, scan=candidate_scans(wc.dataset)),
    output:
        table=res("qc/ingest.tsv"),
    params:
        code=script_code("ingest_qc.py"),
    log:
        log_path("ingest_qc"),
    script:
        "../scripts/ingest_qc.py"


rule exclusions:
    input:
        ingest=res("qc/ingest.tsv"),
        registration=res("qc/registration.tsv"),
        preprocess=res("qc/preprocess.tsv"),
    output:
        table=report(res("qc/exclusions.tsv"), caption="../report/exclusions_series.rst",
                     category="1. Data preparation", subcategory="{dataset}",
                     labels={"result": "2 Exclusions: every series (TSV, download)"}),
        markdown=res("tables/exclusions.md"),
        html=report(res("tables/exclusions.html"), caption="../report/exclusions.rst",
                    category="1. Data preparation", subcategory="{dataset}", labels={"result": "1 Exclusions by reason"}),
        figure=report(res("figures/exclusions.png"), caption="../report/exclusions_figure.rst",
                      category="1. Data preparation", subcategory="{dataset}",
                      labels={"result": "1 Exclusions by stage (figure)"}),
    params:
        code=script_code("exclusions.py"),
    log:
        log_path("exclusions"),
    script:
        "../scripts/exclusions.py"


rule labels:
    input:
        unpack(labels_input),
        index=res("index/series.tsv"),
    output:
        res("labels.tsv"),
    params:
        raw=raw_labels_path,
        key=lambda wc: key_path(wc.dataset),
        code=script_code("labels.py"),
    log:
        log_path("labels"),
    script:
        "../scripts/labels.py"
