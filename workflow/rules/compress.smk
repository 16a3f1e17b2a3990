rule compress:
    input:
        weights=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/weights.safetensors",
        metrics=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/metrics.json",
        predictions=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/predictions_test.csv",
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
        cache=f"{RESULTS}/data/{{dataset}}/cache_{IMG}.npy",
    output:
        metrics=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/compressed/{{precision}}/metrics.json",
        predictions=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/compressed/{{precision}}/predictions_test.csv",
    params:
        batch_size=max(TRAIN["batch_size"], 64),
    threads: 4
    resources:
        gpu=compress_gpu,
    log:
        "logs/compress/{dataset}/{model}_{augment}_seed{seed}_{precision}.log",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/compress.py"
