"""Targets: what an explanation explains, and the score ``y^c`` that is differentiated.

A **target** is an int (one class for the whole batch), a LongTensor, list or tuple with one
class per sample, or a callable mapping the model's output to one score per sample (what makes
latent factors and any embedding explainable). This module checks a target
(:func:`check_target`), reads its score from a model's output (:func:`target_scores`) and
gives the target of a part or of copies of a batch (:func:`slice_target`,
:func:`repeat_target`, :func:`sample_target`), all through one normaliser,
:func:`per_sample`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

Target = int | torch.Tensor | list | tuple | Callable[[torch.Tensor], torch.Tensor]


def is_score(target: object) -> bool:
    """Whether ``target`` is a callable score (not a class target)."""
    return callable(target) and not isinstance(target, torch.Tensor)


def per_sample(target: Target) -> torch.Tensor | None:
    """The normaliser: a target's classes as one index per sample ``(n,)``, or None for a
    target that is the same for every sample (an int, a 0-d tensor, a callable)."""
    if is_score(target):
        return None
    index = torch.as_tensor(target)
    return index if index.dim() == 1 else None


def repeat_target(target: Target, copies: int, interleave: bool = False) -> Target:
    """The target of ``copies`` stacked copies of a batch: ``torch.cat([x] * copies)``, or
    ``x.repeat_interleave(copies, 0)`` (every sample ``copies`` times in a row) with
    ``interleave``. A per-sample index is repeated the same way, any other target kept."""
    index = per_sample(target)
    if index is None:
        return target
    return index.repeat_interleave(copies) if interleave else index.repeat(copies)


def slice_target(target: Target, start: int, stop: int, n: int) -> Target:
    """The target of samples ``start:stop`` of a batch of ``n``: a per-sample index is sliced,
    any other target kept."""
    index = per_sample(target)
    return index[start:stop] if index is not None and len(index) == n else target


def sample_target(target: Target, i: int, n: int) -> Target:
    """The target of sample ``i`` of ``n``, for any number of copies of that sample: its class
    as a 0-d index, or the target itself if it is the same for every sample."""
    index = per_sample(target)
    return index[i] if index is not None and len(index) == n else target


def target_scores(output: torch.Tensor, target: Target) -> torch.Tensor:
    """The score ``(n,)`` of ``target`` for each sample of the model ``output (n, classes)``.

    A callable target receives the output as it is - a tensor, or a tuple such as a VAE
    encoder's ``(mu, logvar)`` - and returns one score per sample."""
    if is_score(target):
        first = output[0] if isinstance(output, (tuple, list)) else output
        n = first.shape[0]
        scores = cast(Callable[[torch.Tensor], torch.Tensor], target)(output)
        if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise ValueError(
                f"a callable target must return one score per sample, shape "
                f"({n},); it returned {shape}"
            )
        return scores
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"a class target needs a model output of shape (n, classes), got "
            f"{shape}; use a callable target for other outputs"
        )
    index = target_classes(target, output.shape[0], output.shape[1], output.device)
    return output.gather(1, index[:, None])[:, 0]


def target_classes(
    target: Target, n: int, classes: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A class target as one class index per sample, ``(n,)`` int64, checked against the
    number of ``classes``."""
    index = _class_index(target, n).to(device)
    index = index.expand(n) if index.dim() == 0 else index
    outside = (index < 0) | (index >= classes)
    if outside.any():
        raise ValueError(
            f"target class(es) {index[outside].unique().tolist()} out of range: the model has "
            f"{classes} classes, 0 .. {classes - 1}"
        )
    return index.long()


def check_target(target: object, n: int) -> Target:
    """``target`` must be a callable or a class target for ``n`` images: an int, or one int per
    image (a list, tuple, integer tensor or array of ``n``). Its range is checked against the
    model's classes once its output is known (:func:`target_classes`)."""
    if not is_score(target):
        _class_index(target, n)
    return cast(Target, target)


def _class_index(target: object, n: int) -> torch.Tensor:
    """A class target as an integer tensor, ``()`` or ``(n,)``; its type and shape checked."""
    if isinstance(target, bool):
        raise ValueError(
            f"target {target!r} is a bool, not a class index: give an int, one per image, "
            f"or a callable"
        )
    try:
        index = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as err:  # None, a string, a dict, ...
        raise TypeError(
            f"target must be a class index (an int), one per image (a list or an integer "
            f"tensor of {n}), or a callable returning one score per image; got "
            f"{type(target).__name__} {short(target)}"
        ) from err
    if index.dim() > 1:
        raise ValueError(
            f"target has shape {tuple(index.shape)}; give one class per image, shape ({n},) "
            f"(target.flatten() for a column, target.argmax(1) for one-hot rows)"
        )
    if index.dim() == 1 and index.shape[0] != n:
        raise ValueError(
            f"target has {index.shape[0]} classes for a batch of {n} images; give "
            f"one int, or one per image"
        )
    if index.dtype == torch.bool:
        raise ValueError(
            f"target is a tensor of bools, {short(target)}; give class indices, an integer "
            f"tensor (target.long() if the bools are classes 0 and 1)"
        )
    if index.is_floating_point() or index.is_complex():
        raise ValueError(
            f"target must be an int, one int per sample, or a callable; got "
            f"{short(target)} (class indices as floats: target.long())"
        )
    return index


def short(value: object, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (for error messages)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
