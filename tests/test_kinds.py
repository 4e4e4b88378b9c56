"""The kind catalogue (repro/kinds.py): every registered SAE kind has exactly one entry, the tables and figures read
labels, colours and order from it, the config schema leaves kind names to it, and a new kind is its module plus one
catalogue line: a toy kind defined here (its class and one ``declare``) trains, saves, loads, is accepted by the
workflow's config check and drawn and labelled by the reports, with no other file touched."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import yaml
from torch import Tensor

from repro import kinds
from repro.sae import base as sae_base
from repro.sae import check_catalogue, create, load, registry
from repro.sae.base import register
from repro.sae.linear import LinearConfig, LinearSAE


def test_every_registered_kind_has_one_entry_and_tables_and_figures_agree():
    from repro.report import figures, tables

    assert set(registry()) == set(kinds.CATALOGUE)
    assert tables.kinds.label("sparsemax_attention_paper") == figures.kind_label("sparsemax_attention_paper")
    assert len({k.label for k in kinds.CATALOGUE.values()}) == len(kinds.CATALOGUE)
    assert len({k.color for k in kinds.CATALOGUE.values()}) == len(kinds.CATALOGUE)
    order = sorted(kinds.CATALOGUE, key=figures._kind_rank)
    assert order[0] == kinds.PAPER_METHOD and order[1:] == [k for k in kinds.order() if k != kinds.PAPER_METHOD]
    assert kinds.guided_kinds() == ("topk", "batchtopk")


def test_the_schema_names_no_kind_and_the_config_check_rejects_an_undeclared_one():
    from repro.workflow import check_config

    schema = open("config/schema.yaml").read()
    assert not any(f"{k}|" in schema or f"|{k}" in schema or f" {k}," in schema for k in kinds.CATALOGUE)
    config = yaml.safe_load(open("config/tiny.yaml"))
    config["train"]["lr_by_kind"] = {"topk": 1e-3, "topkk": 1e-3}
    with pytest.raises(ValueError, match=r"train\.lr_by_kind\.topkk: unknown SAE kind 'topkk'"):
        check_config(config)


@dataclass(frozen=True)
class ToyConfig(LinearConfig):
    """threshold: a fixed activation threshold (the toy's sparsity knob)."""

    threshold: float = 0.5


class ToySAE(LinearSAE):
    """acts = (x_n - b_dec) W_enc + b_enc where above ``threshold``, else 0; x_hat = acts W_dec + b_dec."""

    kind = "toy_threshold"
    config_cls = ToyConfig

    def encode_normalised(self, x_n: Tensor) -> Tensor:
        pre = self.pre_activation(x_n)
        return pre * (pre > self.cfg.threshold)

    def normalised_loss(self, x_n: Tensor, ctx: Tensor | None):
        acts = self.encode_normalised(x_n)
        recon, raw_mse = self.reconstruction_terms(x_n, self.decode_normalised(acts), ctx)
        return recon, self.log_parts(recon, raw_mse, (acts != 0).sum(-1), recon=recon)


@pytest.fixture
def toy_kind():
    """The toy kind: its class (``register``) and one catalogue line (``declare``); removed afterwards."""
    register(ToySAE)
    kinds.declare(kinds.Kind("toy_threshold", "Toy threshold", "#000080", "p", "classic", knob="threshold"))
    try:
        yield "toy_threshold"
    finally:
        sae_base._REGISTRY.pop("toy_threshold", None)
        kinds.CATALOGUE.pop("toy_threshold", None)


def test_a_new_kind_is_its_class_plus_one_catalogue_line(toy_kind, tmp_path):
    from repro.report import figures
    from repro.report.aggregate import train_rows
    from repro.train import TrainConfig, train
    from repro.workflow import check_config

    check_catalogue()
    torch.manual_seed(0)
    x = torch.randn(2048, 16)
    sae = create(toy_kind, 16, 64, seed=0, threshold=0.2)
    result = train(
        sae, (x[i : i + 256] for i in range(0, 2048, 256)), TrainConfig(steps=8, warmup_steps=1), tmp_path / "run"
    )
    back = load(result.sae_dir)
    with torch.no_grad():
        assert back.kind == toy_kind and torch.equal(back.encode(x), sae.eval().encode(x))
    style = figures.kind_style(toy_kind)
    assert style["color"] == "#000080" and style["marker"] == "p" and figures.kind_label(toy_kind) == "Toy threshold"
    record = {
        "run": "r",
        "eval": "reconstruction",
        "kind": toy_kind,
        "sae_config": {"d_in": 16, "d_sae": 64, "threshold": 0.2},
        "seed": 0,
        "data": {"backbone": {"name": "b"}, "hook": "h", "splits": {"test": {"dataset": {"name": "d"}}}},
    }
    rows = train_rows(record)
    assert any(r["metric"] == "hp_threshold" and r["value"] == 0.2 for r in rows)
    config = yaml.safe_load(open("config/tiny.yaml"))
    config["experiments"]["ablation"]["kinds"].append(toy_kind)
    config["hyperparameters"][toy_kind] = {"threshold": 0.3}
    check_config(config)  # accepted: the schema leaves kind names to the catalogue
    config["hyperparameters"][toy_kind] = {"threshhold": 0.3}
    with pytest.raises(ValueError, match="threshhold"):
        check_config(config)


def test_a_kind_registered_without_a_catalogue_entry_is_refused():
    register(ToySAE)
    try:
        with pytest.raises(RuntimeError, match=r"registered without a repro.kinds entry: \['toy_threshold'\]"):
            check_catalogue()
    finally:
        sae_base._REGISTRY.pop("toy_threshold", None)
