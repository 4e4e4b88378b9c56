# Config validation (before any job runs), the plan, the paths every rule shares, and the input functions.

import functools
import json
from pathlib import Path

from snakemake.utils import validate

from repro.report.catalogue import EXTERNAL_TABLE, FIGURE_DATA, FIGURE_SOURCES, TABLE_NAMES
from repro.workflow import (
    EXTERNAL,
    GUIDE_SOURCE,
    GUIDED,
    Run,
    check_config,
    external_run_id,
    hyperparameters,
    learning_rate,
    make_plan,
)

validate(config, "../../config/schema.yaml")
config["rebuild"] = str(config.get("rebuild", False)).lower() == "true"  # `--config rebuild=true` gives a string
if workflow.is_main_process:  # not again inside each cluster job: it imports torch (~2 s per start)
    check_config(config)
PLAN = make_plan(config)
RUNS = config["runs_root"]
RESULTS = config["results_root"]
FIGURES = config["figures_root"]
CACHE = config["cache_root"]
DEVICE = config.get("device", "cpu")
GPUS = 0 if DEVICE == "cpu" else 1  # per extract/train/guide/evaluate job; the SLURM executor asks --gpus=1
RUN_PATTERN = f"{RUNS}/{{role}}/{{kind}}/{{setting}}/x{{expansion}}/s{{seed}}"
RUN_NAME = "{role}-{kind}-{setting}-x{expansion}-s{seed}"
ENV = "../../environment.yml"


wildcard_constraints:
    role="language|vision",
    kind="[a-z_]+",
    setting="[^/]+",
    expansion=r"\d+",
    seed=r"\d+",
    split="train|test",
    table="[a-z_0-9]+",
    name=r"[a-z0-9][a-z0-9_.-]*",
    figure="|".join(FIGURE_SOURCES),  # not "[a-z_0-9]+": that would also claim the synthetic rule's figures


def backbone(role):
    """The role's backbone entry with the schema's defaults filled in."""
    return {
        "seed": 0,
        "train_limit": None,
        "test_limit": None,
        "dtype": "float32",
        "data_root": None,
        "max_norm_ratio": None,
        "image_size": None,
        **config["backbones"][role],
    }


def token_filter_option(role):
    ratio = backbone(role)["max_norm_ratio"]
    return "" if ratio is None else f"--max-norm-ratio {ratio}"


def image_size_option(role):
    size = backbone(role)["image_size"]
    return "" if size is None else f"--image-size {size}"


def data_root_option(role):
    root = backbone(role)["data_root"]
    return f"--data-root {root}" if root else ""


def split_limit_option(role, split):
    """The training split: ``train_limit`` examples; the test split: at most ``test_limit`` (as evaluation reads it)."""
    if split == "train":
        limit = backbone(role)["train_limit"]
        return "" if limit is None else f"--limit {limit}"
    limit = backbone(role)["test_limit"]
    return "--at-most" if limit is None else f"--limit {limit} --at-most"


def pointer(role, split):
    """The pointer file of the role's activation cache of ``split`` (rule extract)."""
    return f"{CACHE}/pointers/{config['name']}/{role}.{split}.json"


def features_pointer(role):
    """The pointer file of the pooled head features of the role's training split (rule head_features)."""
    return f"{CACHE}/pointers/{config['name']}/{role}.train.features.json"


def test_limit(role):
    return backbone(role)["test_limit"] or "all"


def run_path(run):
    return f"{RUNS}/{run.id}"


def run_of(wc):
    return Run(wc.role, wc.kind, wc.setting, int(wc.expansion), int(wc.seed))


def train_inputs(wc):
    """The role's cache pointer and, for guided runs, the guidance file of the sparsemax run (the DAG edge)."""
    inputs = {"cache": pointer(wc.role, "train")}
    if wc.setting == GUIDED:
        source = Run(wc.role, GUIDE_SOURCE, "default", int(wc.expansion), int(wc.seed))
        inputs["guide"] = f"{run_path(source)}/guide.json"
    return inputs


def set_options(wc):
    return " ".join(f"--set {k}={json.dumps(v)}" for k, v in hyperparameters(config, run_of(wc)).items())


def labels_of(run_id, setting):
    """The labels a run records for aggregation (repro train/import --label)."""
    return f"--label config={config['name']} --label run={run_id} --label setting={setting}"


def label_options(wc):
    return labels_of(run_of(wc).id, wc.setting)


def eval_options(run_id):
    return " ".join(f"--eval {e}" for e in sorted(PLAN.evals[run_id]))


def role_of(run_id):
    """The backbone role of a run id (its first component)."""
    return run_id.split("/", 1)[0]


def external_entry(wc):
    return PLAN.external[external_run_id(wc.role, wc.name)]


def external_inputs(wc):
    """The role's cache pointer and the SAELens folder's two files (a changed SAE is imported again)."""
    folder = Path(external_entry(wc)["path"])
    return {
        "cache": pointer(wc.role, "train"),
        "cfg": str(folder / "cfg.json"),
        "weights": str(folder / "sae_weights.safetensors"),
    }


def import_options(wc):
    entry = external_entry(wc)
    options = [f"--{key} {entry[key]}" for key in ("model", "hook") if entry.get(key)]
    return " ".join(options + [labels_of(external_run_id(wc.role, wc.name), EXTERNAL)])


def eval_settings():
    e = {
        "selection": "nonzero",
        "head": "auto",
        "threshold": 0.2,
        "ns": [1, 5, 10, 50],
        "top_k": 50,
        "lm_texts": 64,
        "batch_size": 32,
        **config["evaluation"],
    }
    return (
        f"--selection {e['selection']} --head {e['head']} --threshold {e['threshold']} --ns {' '.join(map(str, e['ns']))} --top-k {e['top_k']} "
        f"--lm-texts {e['lm_texts']} --batch-size {e['batch_size']}"
    )


@functools.cache
def head_of(role):
    """The top-n head of the role's evaluations (``evaluation.head``; ``auto`` resolved by the backbone)."""
    from repro.evals.heads import resolve_head  # imports torch: only where a run of the role has top-n

    return resolve_head(config["evaluation"].get("head", "auto"), backbone(role)["name"])


def evaluate_inputs(wc):
    """The run's record and the activation caches of both splits of its role (every evaluation reads the test
    split; probing and top-n the training split), and for top-n with a fitted head the training split's pooled
    features (the DAG's nodes: evaluation extracts nothing)."""
    role = role_of(wc.run)
    inputs = {"summary": f"{RUNS}/{wc.run}/train.json", "train": pointer(role, "train"), "test": pointer(role, "test")}
    if "topn" in PLAN.evals[wc.run] and head_of(role) != "zero-shot":
        inputs["features"] = features_pointer(role)
    return inputs


def eval_outputs():
    """The evaluation index of every run of the plan, trained and imported."""
    return sorted(
        [f"{run_path(run)}/eval/index.json" for run in PLAN.runs.values()]
        + [f"{RUNS}/{run_id}/eval/index.json" for run_id in PLAN.external]
    )


def aggregate_inputs(wildcards):
    """The evaluation indexes, unless the runs are absent and the committed results are reused (rebuild: false)."""
    has_runs = any(Path(RUNS).glob("*/*/*/*/*/train.json"))
    if not config.get("rebuild", False) and not has_runs and Path(f"{RESULTS}/metrics.csv").exists():
        return []
    return eval_outputs()


def figure_inputs(wc):
    source = FIGURE_SOURCES[wc.figure]
    return [f"{RESULTS}/metrics.csv"] if source == "metrics" else [f"{RESULTS}/figure_data/{source}.json"]


def rebuild_record(step):
    """With ``rebuild: true``, the aggregation steps also write a record of what they read under runs_root
    (never committed). A fresh clone lacks it, so the step runs, and with it every job it reads from:
    without it, Snakemake would keep the committed metrics.csv (an existing output with missing inputs is
    not out of date) and train nothing."""
    return {"record": f"{RUNS}/reports/{step}.json"} if config["rebuild"] else {}


def record_option(output):
    return f"--record {output.record}" if "record" in output.keys() else ""


def synthetic_benchmarks():
    """{name: config path} of the ground-truth benchmarks (``experiments.synthetic.config``: one path or a
    list); a benchmark's name is its config's file name without ``.yaml``, its results go to
    ``results/<name>/`` and its figures to ``figures/<name>_*.pdf``."""
    paths = config["experiments"].get("synthetic", {}).get("config", "config/synthetic.yaml")
    return {Path(p).stem: p for p in ([paths] if isinstance(paths, str) else paths)}


def final_outputs():
    """Everything `all` builds: the metrics, every table (md, tex; ``external`` when SAEs are imported), every
    figure (pdf, png), the audit, and with ``rebuild: true`` the aggregation records (so that the rebuild starts
    from the runs)."""
    records = [*rebuild_record("aggregate").values(), *rebuild_record("figure_data").values()]
    names = TABLE_NAMES + ((EXTERNAL_TABLE,) if PLAN.external else ())
    tables = [f"{RESULTS}/tables/{t}.{ext}" for t in names for ext in ("md", "tex")]
    figures = [f"{FIGURES}/{f}.{ext}" for f in FIGURE_SOURCES for ext in ("pdf", "png")]
    synthetic = (
        [f"{RESULTS}/{name}/table.md" for name in synthetic_benchmarks()]
        if config["experiments"].get("synthetic", {}).get("enabled")
        else []
    )
    return [f"{RESULTS}/metrics.csv", *tables, *figures, f"{RESULTS}/audit.md", *synthetic, *records]
