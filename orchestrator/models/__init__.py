"""Model zoo: architecture names -> (width spec, builder), the same names everywhere.

`resnet{6n+2}` has option-A shortcuts (the public CIFAR checkpoints), `resnet{6n+2}b` option B
(1x1 conv shortcuts); `vgg{11,13,16,19}` are the BN variants; `mobilenetv2`. A model records its
`arch` and `widths` so that a checkpoint can rebuild it, pruned or not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ValidationError
from torch import nn

from ..errors import ModelSpecError, describe_validation
from . import mobilenetv2, resnet, vgg


@dataclass(frozen=True)
class Family:
    pattern: re.Pattern
    widths_cls: type[BaseModel]
    default: Callable[[re.Match, float], BaseModel]
    build: Callable[[BaseModel, int], nn.Module]
    check: Callable[[re.Match, BaseModel], str | None] = lambda m, w: None
    note: Callable[[re.Match], str] = lambda m: ""  # what `orchestrator models` says about an arch
    accepts: Callable[[re.Match], bool] = lambda m: True  # names the pattern matches that the family builds


def _resnet_check(m: re.Match, w: resnet.ResNetWidths) -> str | None:
    depth, shortcut = int(m[1]), "B" if m[2] else "A"
    if w.depth != depth:
        return f"widths describe a ResNet-{w.depth}, not a ResNet-{depth}"
    if w.shortcut != shortcut:
        return f"widths use option-{w.shortcut} shortcuts, arch {m[0]!r} uses option {shortcut}"
    return None


def _vgg_check(m: re.Match, w: vgg.VGGWidths) -> str | None:
    n = sum(map(len, w.stages))
    want = sum(map(len, vgg.BASE_STAGES[int(m[1])]))
    return None if n == want else f"widths list {n} convs, {m[0]!r} has {want}"


FAMILIES: dict[str, Family] = {
    "resnet": Family(re.compile(r"resnet(\d+)(b?)"), resnet.ResNetWidths,
                     lambda m, k: resnet.default_widths(int(m[1]), k, "B" if m[2] else "A"),
                     resnet.CifarResNet, _resnet_check,
                     lambda m: "option-B 1x1 shortcuts" if m[2] else "option-A shortcuts",
                     lambda m: (int(m[1]) - 2) % 6 == 0 and int(m[1]) >= 8),  # depth 6n+2
    "vgg": Family(re.compile(r"vgg(11|13|16|19)"), vgg.VGGWidths,
                  lambda m, k: vgg.default_widths(int(m[1]), k), vgg.CifarVGG, _vgg_check),
    "mobilenetv2": Family(re.compile(r"mobilenetv2"), mobilenetv2.MobileNetV2Widths,
                          lambda m, k: mobilenetv2.default_widths(k), mobilenetv2.CifarMobileNetV2),
}

# The names listed by `orchestrator models`; any ResNet depth 6n+2 is also accepted.
ARCHITECTURES = ([f"resnet{d}" for d in (20, 32, 44, 56, 110)] + [f"resnet{d}b" for d in (20, 56)]
                 + [f"vgg{d}" for d in (11, 13, 16, 19)] + ["mobilenetv2"])


def _match(arch: str) -> tuple[Family, re.Match]:
    for family in FAMILIES.values():
        m = family.pattern.fullmatch(arch)
        if m and family.accepts(m):
            return family, m
    raise ModelSpecError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHITECTURES)} "
                         "(and resnet<6n+2>[b] for other depths)")


def family_of(arch: str) -> str | None:
    """The family name (a key of FAMILIES) of an architecture name, None for an unknown one."""
    try:
        family, _ = _match(arch)
    except ModelSpecError:
        return None
    return next(name for name, f in FAMILIES.items() if f is family)


def describe(arch: str) -> str:
    """A short note on an architecture name (its family's variant), for listings."""
    family, m = _match(arch)
    return family.note(m)


def _check_width_mult(width_mult) -> None:
    if not (isinstance(width_mult, (int, float)) and math.isfinite(width_mult) and width_mult > 0):
        raise ModelSpecError(f"width_mult={width_mult} must be a finite number > 0")


def default_widths(arch: str, width_mult: float = 1.0) -> dict:
    _check_width_mult(width_mult)
    family, m = _match(arch)
    return family.default(m, width_mult).model_dump()


def build_model(arch: str, num_classes: int = 10, widths: dict | BaseModel | None = None,
                width_mult: float = 1.0) -> nn.Module:
    """Build `arch` from a width spec (default: the paper's widths times `width_mult`)."""
    if num_classes < 2:
        raise ModelSpecError(f"num_classes={num_classes} must be >= 2")
    family, m = _match(arch)
    if widths is None:
        _check_width_mult(width_mult)
        spec = family.default(m, width_mult)
    else:
        try:
            raw = widths.model_dump() if isinstance(widths, BaseModel) else widths
            spec = family.widths_cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelSpecError(f"widths of {arch!r}: {describe_validation(exc, 'width spec')}") from None
        problem = family.check(m, spec)
        if problem:
            raise ModelSpecError(f"invalid widths for {arch!r}: {problem}")
    try:
        model = family.build(spec, num_classes)
    except ValueError as exc:
        raise ModelSpecError(f"invalid widths for {arch!r}: {exc}") from None
    model.arch, model.widths, model.num_classes = arch, spec.model_dump(), num_classes
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (weights, biases, BN affine); BN running statistics excluded."""
    return sum(p.numel() for p in model.parameters())


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Conv/linear layer names by group, in network order (ResNet: stem, stage1..3, classifier).

    Groups are what search spaces and configs give per-group pruning ratios and bits for; each model
    family says which group a layer belongs to (`layer_group`), other modules group by top-level child.
    """
    groups: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            group = model.layer_group(name) if hasattr(model, "layer_group") else name.split(".")[0]
            groups.setdefault(group, []).append(name)
    return groups
