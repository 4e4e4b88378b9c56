"""Running part of a forward pass with temporary hooks, and the layouts of what the hooks read.

:func:`output_of` / :func:`call_of` stop a forward pass at a module's output or call, :func:`run_layers_from`
reruns the layers from a hook point, :func:`replaced_output` / :func:`replaced_input` splice given activations
in. The hooks act only in the thread that set them. :func:`masked_mean`, :func:`tokens_from_map` and
:func:`map_from_tokens` pool and reshape activations ``(B, T, d)``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import Tensor, nn


class _Stop(BaseException):
    """Raised by a hook to end a forward pass early (BaseException so that no ``except Exception`` in
    library code swallows it)."""


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _run_until(module: nn.Module, run: Callable[[], Any], register: Callable, capture: Callable) -> Any:
    """Call ``run()`` with a hook installed by ``register(module, hook)`` that records ``capture(...)`` of
    the hooked call (in this thread only) and stops the forward pass there; return the record."""
    box: list[Any] = []
    me = threading.get_ident()

    def hook(*hook_args):
        if threading.get_ident() != me:  # another thread's forward pass through the same model
            return None
        box.append(capture(*hook_args))
        raise _Stop

    handle = register(module, hook)
    try:
        run()
    except _Stop:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError(f"the forward pass never reached {type(module).__name__}")
    return box[0]


def output_of(module: nn.Module, run: Callable[[], Any]) -> Tensor:
    """Call ``run()`` (a forward pass) until ``module`` has returned; return its output (the first
    element of a tuple output). Nothing after ``module`` is computed."""
    return _run_until(
        module, run, lambda m, hook: m.register_forward_hook(hook), lambda _mod, _args, output: _first(output)
    )


def call_of(module: nn.Module, run: Callable[[], Any]) -> tuple[tuple, dict]:
    """Call ``run()`` until ``module`` is about to be called; return the call's (args, kwargs)."""
    return _run_until(
        module,
        run,
        lambda m, hook: m.register_forward_pre_hook(hook, with_kwargs=True),
        lambda _mod, args, kwargs: (args, kwargs),
    )


def run_layers_from(layers: Sequence[nn.Module], start: int, hidden: Tensor, run: Callable[[], Any]) -> Tensor:
    """Run ``layers[start:]`` on ``hidden`` with the extra arguments (attention mask, position
    embeddings, …) that the model's own forward ``run()`` passes to its layers. Those are captured at
    the call of ``layers[0]`` (only the embeddings are computed for that), and are the same for every
    layer in the models used here (BERT, Llama, GPT-2, CLIP), whose forward loops over the layers
    with nothing in between."""
    args, kwargs = call_of(layers[0], run)
    for layer in layers[start:]:
        hidden = _first(layer(hidden, *args[1:], **kwargs))
    return hidden


@contextlib.contextmanager
def replaced_output(module: nn.Module, value: Tensor) -> Iterator[None]:
    """While active, ``module``'s output (its first element for tuples) is replaced by ``value``."""
    me = threading.get_ident()

    def hook(_mod, _args, output):
        if threading.get_ident() != me:
            return None
        if isinstance(output, tuple):
            return (value, *output[1:])
        return value

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def replaced_input(module: nn.Module, value: Tensor) -> Iterator[None]:
    """While active, ``module``'s first positional input (or ``hidden_states``) is replaced by ``value``."""
    me = threading.get_ident()

    def hook(_mod, args, kwargs):
        if threading.get_ident() != me:
            return None
        if args:
            return (value, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": value}

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` ``(B, T, d)`` over the True positions of ``mask`` ``(B, T)`` → ``(B, d)``; a row
    with no True position gives zeros."""
    m = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def tokens_from_map(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, H·W, C), spatial positions in row-major order."""
    return x.flatten(2).transpose(1, 2)


def map_from_tokens(acts: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`tokens_from_map`."""
    b, t, c = acts.shape
    if t != height * width:
        raise ValueError(f"expected {height}×{width} = {height * width} spatial tokens, got {t}")
    return acts.transpose(1, 2).reshape(b, c, height, width)
