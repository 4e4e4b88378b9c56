"""Figure data: what the figures need beyond ``metrics.csv``, gathered from the runs into small JSON files.

Written by ``repro report figure-data`` (a workflow rule) into ``<results>/figure_data/`` and committed, so
that every figure rebuilds from committed files without the runs. It reads evaluation records only
(:mod:`repro.eval_record`): the examples' content, class names and token strings were written by the evaluation
(:mod:`repro.evals.payloads`), so no dataset, backbone or training log is opened here.

- ``latents.json``: per run with an interpretability evaluation, per alive latent its token firing rate,
  mean activation when firing, label entropy and purity of its top examples;
- ``training_curves.json``: per trained run (imported ones have no log), the training log (step, loss, MSE,
  L0) thinned to at most 100 points (written by the reconstruction evaluation);
- ``l0_distribution.json``: per sparsemax/TopK/BatchTopK run, the per-token L0 histogram and the
  held-out examples with the fewest and the most active latents, with their text or image;
- ``concepts.json``: per run with an interpretability evaluation, its purest latents with their top
  examples: the image (gray, as stored) and the latent's activation on each spatial token, or the text's
  tokens and the latent's activation on each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from repro import eval_record, kinds
from repro.report.aggregate import expand_indexes
from repro.report.catalogue import FIGURE_DATA


def _l0_figure(kind: str) -> bool:
    """Whether the L0 distribution figure shows ``kind`` (``repro.kinds``: adaptive or fixed-k codes)."""
    entry = kinds.info(kind)
    return bool(entry and entry.l0_figure)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _records(index_files) -> list[dict]:
    return [eval_record.read(p) for p in expand_indexes(index_files)]


def _meta(record: dict, labels: dict) -> dict:
    cfg = record["sae_config"]
    data = record["data"]
    split = data["splits"].get("test") or next(iter(data["splits"].values()))
    return {
        "kind": record["kind"],
        "backbone": data["backbone"]["name"],
        "dataset": split["dataset"]["name"],
        "expansion": cfg["d_sae"] / cfg["d_in"],
        "setting": labels.get("setting", "default"),
        "seed": record["seed"],
    }


def collect(index_files, out_dir: str | Path) -> dict[str, Path]:
    """Write the four figure-data files (module docstring) from the runs' evaluation indexes."""
    from repro.files import atomic_write

    out: dict[str, dict] = {name: {} for name in FIGURE_DATA}
    for record in _records(index_files):
        labels = record["labels"]
        run_id = labels.get("run", record["run"])
        meta = _meta(record, labels)
        test = record["data"]["splits"].get("test", {}).get("dataset")
        modality = test["modality"] if test else None
        res = record["results"]
        if record["eval"] == "interpretability":
            out["latents"][run_id] = meta | _latents(res)
            out["concepts"][run_id] = meta | {"modality": modality, "latents": _concepts(res, modality)}
        elif record["eval"] == "reconstruction":
            if run_id not in out["training_curves"] and res.get("training_curve"):  # imported runs have none
                out["training_curves"][run_id] = meta | res["training_curve"]
            if _l0_figure(record["kind"]) and "example_l0" in res:
                out["l0_distribution"][run_id] = meta | _l0(res)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = {}
    for name, runs in out.items():
        path = Path(out_dir) / f"{name}.json"
        text = json.dumps({"runs": dict(sorted(runs.items()))}, allow_nan=False)
        atomic_write(path, lambda p, text=text: Path(p).write_text(text))
        written[name] = path
    return written


def _latents(res: dict) -> dict:
    per, firing = res["scores"]["per_latent"], res["firing"]
    alive = [i for i, r in enumerate(firing["firing_rate"]) if r]
    return {
        "firing_rate": [firing["firing_rate"][i] for i in alive],
        "mean_act": [_clean(firing["mean_act"][i]) for i in alive],
        "entropy": [per["entropy"][i] for i in alive],
        "purity": [per["purity"][i] for i in alive],
    }


def _l0(res: dict) -> dict:
    ex = res["example_l0"]
    groups = {
        side: [
            {"id": e["id"], "l0": e["l0"], "label": e["class"], "text": e["text"], "image": e["image"]}
            for e in ex[side]
        ]
        for side in ("fewest", "most")
    }
    return {"hist": res.get("l0_hist", []), **groups}


def _concepts(res: dict, modality: str, max_latents: int = 6) -> list[dict]:
    out = []
    for c in res.get("concepts", [])[:max_latents]:
        items = []
        for e in c["examples"]:
            item = {"id": e["id"], "label": e["class"], "value": e["value"], "text": e["text"], "image": e["image"]}
            acts = dict(zip(e["positions"], e["token_acts"], strict=True))
            if modality == "image":
                n = max(e["positions"]) + 1
                side = int(round(math.sqrt(n)))
                grid = [[acts.get(r * side + col, 0.0) for col in range(side)] for r in range(side)]
                item |= {"token_map": grid if side * side == n else None, "tokens": None, "token_acts": None}
            else:
                item |= {"token_map": None, "tokens": e["tokens"], "token_acts": e["token_acts"]}
            items.append(item)
        out.append({"latent": c["latent"], "purity": c["purity"], "examples": items})
    return out
