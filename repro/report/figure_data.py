"""Figure data: what the figures need beyond ``metrics.csv``, gathered from the runs into small JSON files.

Written by ``repro report figure-data`` (a workflow rule) into ``<results>/figure_data/`` and committed, so
that every figure rebuilds from committed files without the runs:

- ``latents.json``: per run with an interpretability evaluation, per alive latent its token firing rate,
  mean activation when firing, label entropy and purity of its top examples;
- ``training_curves.json``: per trained run (imported ones have no log), the training log (step, loss, MSE,
  L0) thinned to at most 100 points;
- ``l0_distribution.json``: per sparsemax/TopK/BatchTopK run, the per-token L0 histogram and the
  held-out examples with the fewest and the most active latents, with their text or image;
- ``concepts.json``: per run with an interpretability evaluation, its purest latents with their top
  examples: the image (gray, as stored) and the latent's activation on each spatial token, or the text's
  tokens and the latent's activation on each.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from repro import kinds, run_record
from repro.report.aggregate import expand_indexes
from repro.report.catalogue import FIGURE_DATA

MAX_POINTS = 100


def _l0_figure(kind: str) -> bool:
    """Whether the L0 distribution figure shows ``kind`` (``repro.kinds``: adaptive or fixed-k codes)."""
    entry = kinds.info(kind)
    return bool(entry and entry.l0_figure)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _records(index_files) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in expand_indexes(index_files)]


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


def _labels(run_dir: Path) -> dict:
    return run_record.labels(run_dir)


class ExampleLookup:
    """Examples of a dataset split by stable id (loaded once per split)."""

    def __init__(self):
        self._splits: dict[tuple, tuple] = {}

    def get(self, dataset_spec: dict, ids: list[int]) -> tuple[list, list[str]]:
        from repro.data import load as load_data

        key = (dataset_spec["name"], dataset_spec["split"], dataset_spec["seed"])
        if key not in self._splits:
            data = load_data(dataset_spec["name"], split=dataset_spec["split"], limit=None, seed=dataset_spec["seed"])
            self._splits[key] = (data, {int(i): r for r, i in enumerate(data.ids)})
        data, row = self._splits[key]
        return [data.examples[row[i]] for i in ids], [data.class_names[data.labels[row[i]]] for i in ids]


def _as_payload(example, modality: str) -> dict:
    if modality == "text":
        return {"text": str(example), "image": None}
    img = np.asarray(example)
    if img.ndim == 3:
        img = img.mean(-1)
    return {"text": None, "image": img.astype(np.uint8).tolist()}


def collect(index_files, out_dir: str | Path) -> dict[str, Path]:
    """Write the four figure-data files (module docstring) from the runs' evaluation indexes."""
    from repro.files import atomic_write

    lookup = ExampleLookup()
    out: dict[str, dict] = {name: {} for name in FIGURE_DATA}
    for record in _records(index_files):
        run_dir = Path(record["run"])
        labels = _labels(run_dir)
        run_id = labels.get("run", str(run_dir))
        meta = _meta(record, labels)
        test = record["data"]["splits"].get("test", {}).get("dataset")
        modality = test["modality"] if test else None
        res = record["results"]
        if record["eval"] == "interpretability":
            out["latents"][run_id] = meta | _latents(res)
            tokens = _Tokens(record["data"]["backbone"]) if modality == "text" else None
            out["concepts"][run_id] = meta | {
                "modality": modality,
                "latents": _concepts(res, test, modality, lookup, tokens),
            }
        elif record["eval"] == "reconstruction":
            if run_id not in out["training_curves"] and (run_dir / "log.csv").is_file():  # imported runs have none
                out["training_curves"][run_id] = meta | _curve(run_dir / "log.csv")
            if _l0_figure(record["kind"]) and "example_l0" in res:
                out["l0_distribution"][run_id] = meta | _l0(res, test, modality, lookup)
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


def _curve(log_csv: Path) -> dict:
    """The run's training log (which exists: imported runs have none and are skipped), thinned."""
    rows = list(csv.DictReader(open(log_csv)))
    keep = np.unique(np.linspace(0, len(rows) - 1, min(MAX_POINTS, len(rows))).round().astype(int)) if rows else []
    pick = [rows[i] for i in keep]
    return {
        "step": [int(r["step"]) for r in pick],
        **{k: [_clean(float(r[k])) for r in pick] for k in ("loss", "mse", "l0")},
    }


def _l0(res: dict, test: dict, modality: str, lookup: ExampleLookup) -> dict:
    hist = res.get("l0_hist", [])
    ex = res["example_l0"]
    groups = {}
    for side in ("fewest", "most"):
        ids = [e["id"] for e in ex[side]]
        examples, names = lookup.get(test, ids) if ids else ([], [])
        groups[side] = [
            {"id": e["id"], "l0": e["l0"], "label": name, **_as_payload(x, modality)}
            for e, x, name in zip(ex[side], examples, names, strict=True)
        ]
    return {"hist": hist, **groups}


class _Tokens:
    """Token strings of a text at given positions, with the tokenizer of the run's backbone."""

    def __init__(self, backbone_spec: dict):
        self.spec = backbone_spec
        self._backbone = None

    def __call__(self, text: str, positions: list[int]) -> list[str]:
        from repro.evaluate import backbone_from_spec

        if self._backbone is None:
            self._backbone = backbone_from_spec(self.spec)
        ids = self._backbone.preprocess([text])["input_ids"][0].tolist()
        return self._backbone.tokenizer.convert_ids_to_tokens([ids[p] for p in positions])


def _concepts(
    res: dict, test: dict, modality: str, lookup: ExampleLookup, tokens: _Tokens | None = None, max_latents: int = 6
) -> list[dict]:
    out = []
    for c in res.get("concepts", [])[:max_latents]:
        ids = [e["id"] for e in c["examples"]]
        examples, names = lookup.get(test, ids) if ids else ([], [])
        items = []
        for e, x, name in zip(c["examples"], examples, names, strict=True):
            item = {"id": e["id"], "label": name, "value": e["value"], **_as_payload(x, modality)}
            acts = dict(zip(e["positions"], e["token_acts"], strict=True))
            if modality == "image":
                n = max(e["positions"]) + 1
                side = int(round(math.sqrt(n)))
                grid = [[acts.get(r * side + col, 0.0) for col in range(side)] for r in range(side)]
                item |= {"token_map": grid if side * side == n else None, "tokens": None, "token_acts": None}
            else:
                item |= {
                    "token_map": None,
                    "tokens": tokens(str(x), e["positions"]) if tokens else None,
                    "token_acts": e["token_acts"],
                }
            items.append(item)
        out.append({"latent": c["latent"], "purity": c["purity"], "examples": items})
    return out
