# Embedded synthetic cohorts (thesis-like data without any download).


rule synth_ct:
    output:
        directory(f"{SOURCES}/{{dataset}}"),
    params:
        n_patients=lambda wc: source_config(wc.dataset)["n_patients"],
        seed=lambda wc: source_config(wc.dataset)["seed"],
        code=script_code("synth_ct.py"),
    threads: 2
    log:
        log_path("synth_ct"),
    script:
        "../scripts/synth_ct.py"
