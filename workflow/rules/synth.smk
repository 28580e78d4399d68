# Embedded synthetic cohorts (thesis-like data without any download).


rule synth_ct:
    output:
        directory(f"{SOURCES}/{{dataset}}"),
    wildcard_constraints:
        dataset=datasets_regex(lambda name: not is_mri(name)),
    params:
        n_patients=lambda wc: source_config(wc.dataset)["n_patients"],
        seed=lambda wc: source_config(wc.dataset)["seed"],
        lesion_contrast_hu=lambda wc: source_config(wc.dataset).get("lesion_contrast_hu"),
        code=script_code("synth_ct.py"),
    threads: 2
    log:
        log_path("synth_ct"),
    script:
        "../scripts/synth_ct.py"
