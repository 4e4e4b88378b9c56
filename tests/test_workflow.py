"""The workflow: the plan of the shipped configs, bad configs rejected before any job runs (the key named),
and the whole DAG on config/tiny.yaml in a temporary folder (every declared output exists, a second run
does nothing, rebuilding one report touches only that report)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from repro.workflow import GUIDED, Run, check_config, format_setting, hyperparameters, make_plan, parse_setting

REPO = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


def snakemake(workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def fresh_clone(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus untracked ones git does not ignore): no runs/, no cache/,
    no .snakemake/ metadata, every file with a new mtime."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / name)
    return dest


def readme_main_command() -> list[str]:
    """The README's main command (the quickstart line that runs the embedded default), as arguments."""
    text = (REPO / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("bash scripts/setup.sh && snakemake"))
    return shlex.split(line.split("&&", 1)[1].split("#", 1)[0])


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout to list the tracked files")
def test_the_readme_main_command_trains_every_run_in_a_fresh_clone(tmp_path):
    """A fresh clone holds the committed results/metrics.csv but no runs: the README's main command must still
    plan every training and evaluation job of the default config (not just redraw the committed figures)."""
    clone = fresh_clone(tmp_path / "clone")
    cmd = readme_main_command()
    assert cmd[0] == "snakemake" and "rebuild=true" in cmd
    out = subprocess.run([sys.executable, "-m", *cmd, "-n"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout, re.M))
    plan = make_plan(load("default"))
    assert int(counts.get("train", 0)) == len(plan.runs), out.stdout[-3000:]
    assert int(counts.get("evaluate", 0)) == len(plan.runs)
    assert int(counts.get("aggregate", 0)) == 1 and int(counts.get("figure_data", 0)) == 1


def test_default_plan_covers_every_experiment():
    config = load("default")
    check_config(config)
    plan = make_plan(config)
    runs = list(plan.runs.values())
    # Table A analogue: every kind at its paper setting at 1 and 2 x d on the size sweep's backbone
    role = config["experiments"]["size_sweep"]["backbone"]
    sweep = {(r.kind, r.expansion) for r in runs if r.role == role and r.setting == "default"}
    table_a = {"relu", "jumprelu", "gated", "topk", "batchtopk", "sparsemax_attention"}
    assert {k for k, x in sweep if x == 1} >= table_a and {k for k, x in sweep if x == 2} >= table_a
    assert {r.kind for r in runs if r.setting == GUIDED} == {"topk", "batchtopk"}
    assert {r.id for r in plan.guide_sources()} == {f"vision/sparsemax_attention/default/x2/s{i}" for i in range(3)}
    # matched sparsity: every knob kind has >= 3 settings at each backbone's comparison size (the default
    # counts as one), beside the sparsemax run it is matched to, and a setting that restates the default is
    # the default run, never a second copy
    for spec in config["experiments"]["pareto"]:
        assert f"{spec['backbone']}/sparsemax_attention/default/x{spec['expansion']}/s0" in plan.runs
        for kind in spec["sweeps"]:
            settings = {
                r.setting
                for r in runs
                if (r.role, r.kind, r.expansion, r.seed) == (spec["backbone"], kind, spec["expansion"], 0)
                and r.setting != GUIDED
            }
            assert len(settings) >= 3, (spec["backbone"], kind, settings)
    assert not any(r.kind in ("topk", "batchtopk") and r.setting == "k=32" for r in runs)  # k = 32 is the default
    # the headline comparisons at 3 seeds (Table B, per-method top-n, guidance); the sweeps at seed 0
    headline = {r.id.rsplit("/", 1)[0] for r in runs if r.seed == 2}
    assert {r.seed for r in runs} == {0, 1, 2} and all(r.kind not in ("jumprelu", "gated") for r in runs if r.seed)
    for kind in ("relu", "attention_relu", "mlp_sparsemax", "sparsemax_attention", "topk", "batchtopk"):
        assert f"vision/{kind}/default/x2" in headline, kind
    assert {"vision/topk/guided/x2", "vision/batchtopk/guided/x2"} <= headline
    assert not any(r.seed and r.setting not in ("default", GUIDED) for r in runs)  # sweeps: seed 0 only
    assert plan.evals["language/topk/default/x2/s0"] == {"reconstruction"}
    vision_smx = plan.evals["vision/sparsemax_attention/default/x2/s0"]
    assert vision_smx == {"reconstruction", "topn", "interpretability", "probing"}  # union over experiments
    assert hyperparameters(config, Run("vision", "topk", "k=12", 2, 0)) == {"k": 12, "input_norm": "scalar"}
    assert hyperparameters(config, Run("language", "relu", "default", 1, 0)) == {
        "l1_coefficient": 5.0,
        "input_norm": "scalar",
    }


def test_per_kind_learning_rates_reach_the_train_jobs(tmp_path):
    from repro.workflow import learning_rate

    config = load("tiny")
    config["train"]["lr_by_kind"] = {"topk": 7.0e-3}
    assert learning_rate(config, "topk") == 7.0e-3 and learning_rate(config, "relu") == config["train"]["lr"]
    (tmp_path / "lr.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(tmp_path / "lr.yaml"), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    commands = re.findall(r"repro\.cli train .*", out.stdout)
    assert commands and all(("--lr 0.007 " in c) == ("--kind topk " in c) for c in commands)


def test_the_configs_device_reaches_every_torch_job_and_gpu_jobs_ask_for_a_gpu(tmp_path):
    """Dry runs: the paper config (device cuda) runs extract, train and evaluate (and head_features where a fitted
    top-n head needs them) with --device cuda and gpu=1 (the SLURM executor's --gpus=1); the guide step reads a
    record and asks for no GPU; the tiny config (cpu) asks for no GPU."""
    (tmp_path / "paper.yaml").write_text((REPO / "config" / "paper.yaml").read_text())
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(tmp_path / "paper.yaml"), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = re.findall(r"\nrule (\w+):.*?resources: ([^\n]*).*?Shell command: ([^\n]*)", out.stdout, re.S)
    gpu_rules = ("extract", "head_features", "train", "evaluate")
    torch_jobs = [job for job in jobs if job[0] in gpu_rules]
    assert {"extract", "train", "evaluate"} <= {job[0] for job in torch_jobs} and "guide" in {j[0] for j in jobs}
    for rule, resources, command in torch_jobs:
        assert "gpu=1" in resources and "--device cuda" in command, (rule, resources, command)
    assert not any("gpu=1" in resources for rule, resources, _ in jobs if rule not in gpu_rules)
    (tmp_path / "tiny.yaml").write_text((REPO / "config" / "tiny.yaml").read_text())
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(tmp_path / "tiny.yaml"), timeout=300)
    assert "gpu=1" not in out.stdout and "gpu=0" in out.stdout and "--device cpu" in out.stdout


def test_each_ground_truth_benchmark_is_a_dag_target_with_its_own_figures(tmp_path):
    """Dry run of `all` with the benchmarks enabled: one synthetic job per config in
    ``experiments.synthetic.config``, each writing results/<name>/ and figures/<name>_*, none claimed by the
    figure rule."""
    config = load("tiny")
    config["experiments"]["synthetic"] = {
        "enabled": True,
        "config": [str(REPO / "config" / "synthetic.yaml"), str(REPO / "config" / "synthetic_hard.yaml")],
    }
    (tmp_path / "syn.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(tmp_path / "syn.yaml"), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    commands = re.findall(r"repro\.cli synthetic .*", out.stdout)
    assert len(commands) == 2, commands
    for name in ("synthetic", "synthetic_hard"):
        assert any(re.search(rf"--config \S*/{name}\.yaml --out \S*/{name} .*--name {name} ", c) for c in commands), (
            commands
        )
        assert f"/{name}_mcc.pdf" in out.stdout
    assert "figure=synthetic" not in out.stdout


def test_snakemake_lint_is_clean(tmp_path):
    """`snakemake --lint` (the Snakemake catalogue's checks: no hard-coded paths in params, logs, resources, ...)
    finds nothing in the workflow."""
    out = snakemake(tmp_path, "--lint", "--configfile", str(REPO / "config" / "default.yaml"), timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_settings_round_trip():
    assert parse_setting("k=24") == {"k": 24}
    assert parse_setting(format_setting("l1_coefficient", 1e-4)) == {"l1_coefficient": 1e-4}
    assert parse_setting("default") == {} and parse_setting(GUIDED) == {}
    with pytest.raises(ValueError, match="bad run setting"):
        parse_setting("k24")


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: c["train"].update(stepz=3), "stepz"),
        (lambda c: c["train"].update(lr=-1), "lr"),
        (lambda c: c["experiments"]["ablation"].update(kinds=["relu", "sparsemaks"]), "sparsemaks"),
        (lambda c: c["hyperparameters"].update(topk={"kk": 8}), "kk"),
        (lambda c: c["backbones"]["vision"].update(name="resnet-9000"), "backbones.vision.name"),
        (lambda c: c["experiments"]["ablation"].update(evals=["lm_loss"]), "experiments.ablation.evals"),
        (
            lambda c: c.update(external=[{"name": "x", "path": "/nowhere", "backbone": "vision"}]),
            "external[0] (x).path",
        ),
        (lambda c: c.update(external=[{"name": "x", "path": "/nowhere", "backbone": "vision", "layer": 3}]), "layer"),
    ],
)
def test_a_bad_config_is_rejected_before_any_job_naming_the_key(tmp_path, edit, named):
    config = load("tiny")
    edit(config)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "bad.yaml"), timeout=120)
    assert out.returncode != 0
    assert named in out.stdout + out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def saelens_topk(folder: Path) -> Path:
    """A TopK SAE (k = 6, 576 latents) for SmolLM2's residual stream after block 20, written by SAELens itself,
    named as SAELens names it (model HuggingFaceTB/SmolLM2-135M, hook blocks.20.hook_resid_post)."""
    import sae_lens
    import torch

    cfg = sae_lens.TopKSAEConfig(d_in=576, d_sae=576, k=6)
    cfg.metadata.model_name, cfg.metadata.hook_name = "HuggingFaceTB/SmolLM2-135M", "blocks.20.hook_resid_post"
    sae = sae_lens.TopKSAE(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        sae.W_enc.normal_(0, 576**-0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    sae.save_model(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_dag(tmp_path_factory):
    """The whole tiny DAG, built once in a temporary folder, with one SAELens SAE among the runs (`external`)."""
    work = tmp_path_factory.mktemp("dag")
    config = work / "tiny.yaml"
    cfg = load("tiny") | {
        "external": [
            {
                "name": "sl-topk",
                "path": str(saelens_topk(work / "sl-topk")),
                "backbone": "language",
                "evals": ["reconstruction", "lm_loss"],
            }
        ]
    }
    config.write_text(yaml.safe_dump(cfg))
    out = snakemake(work, "--cores", "2", "--configfile", str(config))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work, config


def test_tiny_dag_builds_every_output(tiny_dag):
    work, config = tiny_dag
    cfg = yaml.safe_load(config.read_text())
    plan = make_plan(cfg)
    for run in plan.runs.values():
        folder = work / cfg["runs_root"] / run.id
        assert (folder / "train.json").is_file() and (folder / "sae" / "cfg.json").is_file()
        for e in plan.evals[run.id]:
            assert (folder / "eval" / f"{e}.json").is_file(), (run.id, e)
    for run_id, evals in ((i, plan.evals[i]) for i in plan.external):
        assert {f"{e}.json" for e in evals} <= {p.name for p in (work / cfg["runs_root"] / run_id / "eval").iterdir()}
    metrics = (work / cfg["results_root"] / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("config,run,backbone") and len(metrics) > 100
    assert (work / cfg["results_root"] / "audit.md").read_text().startswith("# Paper audit")
    benchmarks = list((work / cfg["runs_root"] / "benchmarks").rglob("*.tsv"))
    assert len(benchmarks) >= len(plan.runs)  # every training (and evaluation) job records its time and memory


def test_an_imported_saelens_sae_reaches_its_table_and_the_frontier_but_not_the_others(tiny_dag):
    work, config = tiny_dag
    cfg = yaml.safe_load(config.read_text())
    results = work / cfg["results_root"]
    record = yaml.safe_load((work / cfg["runs_root"] / "language/external/sl-topk/train.json").read_text())
    assert record["imported"]["hook"] == "resid.20" and record["kind"] == "topk"
    table = (results / "tables" / "external.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| sl-topk |"))
    assert "smollm2-135m (fortunes)" in row and "| resid.20 | TopK | 576 |" in row
    assert "| 6.0 |" in row  # L0 = k
    assert re.search(r"\| -?\d+\.\d{4} \|", row)  # the CE degradation was measured
    metrics = (results / "metrics.csv").read_text()
    assert ",language/external/sl-topk," in metrics and ",external,lm_loss,ce_delta," in metrics
    for other in ("matched_l0", "table_a", "guidance"):
        assert "external" not in (results / "tables" / f"{other}.md").read_text()
    assert "sl-topk" not in (results / "audit.md").read_text()


def test_a_second_run_does_nothing(tiny_dag):
    work, config = tiny_dag
    out = snakemake(work, "-n", "--configfile", str(config), timeout=120)
    assert out.returncode == 0 and "Nothing to be done" in out.stdout + out.stderr


def test_rebuilding_one_report_touches_only_it(tiny_dag):
    work, config = tiny_dag
    results = work / yaml.safe_load(config.read_text())["results_root"]
    before = (results / "metrics.csv").stat().st_mtime_ns
    (results / "audit.md").unlink()
    target = str(results.relative_to(work) / "audit.md")  # before --configfile, which takes several values
    out = snakemake(work, target, "--cores", "1", "--configfile", str(config), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (results / "audit.md").is_file() and (results / "metrics.csv").stat().st_mtime_ns == before
    assert "rule audit" in out.stdout + out.stderr and "rule train" not in out.stdout + out.stderr
