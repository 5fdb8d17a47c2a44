"""The shared value types: one rule per quantity, the same in configs, search spaces, the CLI and primitives."""

import pytest
from pydantic import ValidationError
from torch import nn

from orchestrator.errors import OrchestratorError
from orchestrator.pipeline import PipelineConfig
from orchestrator.pruning.core import check_ratio
from orchestrator.quant import QuantConfig
from orchestrator.study.space import Dimensions
from orchestrator.qformat import FLOAT, WEIGHT_BITS, format_of, quantize_weight_, weight_spec


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "half", float("nan")])
def test_a_bad_ratio_is_refused_by_the_primitive_the_config_and_the_space_alike(bad):
    with pytest.raises(OrchestratorError, match=r"pruning ratio=.* is not allowed; allowed: a number in \[0, 1\)"):
        check_ratio(bad)
    if not isinstance(bad, bool):  # pydantic reads a bool as a number only in lax int mode; floats refuse it too
        with pytest.raises(ValidationError):
            PipelineConfig(steps=[{"prune": {"method": "global_magnitude", "ratio": bad}}])
        with pytest.raises(ValidationError):
            Dimensions(ratio=[bad])


def test_weight_precision_is_one_encoding_for_spaces_configs_and_quantized_layers():
    """Bits per stored weight say everything: each format declares its precisions, a layer quantized at
    `bits` records exactly them, and older records' (format, bits) and `act_bits: null` still load."""
    assert WEIGHT_BITS == (32, 16, 8, 7, 6, 5, 4, 3, 2, 1)
    names = {32: "fp32", 16: "fp16", 1: "binary"}
    for bits in WEIGHT_BITS:
        assert QuantConfig(bits=bits).bits == bits
        assert format_of(bits).name == names.get(bits, "int") and bits in format_of(bits).precisions
        conv = quantize_weight_(nn.Conv2d(2, 3, 3), bits)
        assert weight_spec(conv) == (None if bits == 32 else (names.get(bits, "int"), bits))
    legacy = [({"format": "fp16", "bits": 8}, 16), ({"format": "binary"}, 1), ({"format": "int", "bits": 4}, 4),
              ({"format": "fp32"}, 32)]
    for record, bits in legacy:
        assert QuantConfig(**record, act_bits=None).model_dump()["bits"] == bits
    assert QuantConfig(act_bits=None).act_bits == FLOAT == 32
    for record, got in (({"format": "bf16"}, "format='bf16'"), ({"format": "int", "bits": 16}, "format='int' with "
                                                                  "bits=16"), ({"format": ["int"]}, r"format=\['int'\]")):
        with pytest.raises(ValidationError, match=f"{got} is not allowed: the weight precision is `bits` alone"):
            QuantConfig(**record)
    with pytest.raises(ValidationError, match="weight bits must be 32"):
        Dimensions(bits=[12])


@pytest.mark.parametrize("bits, weights, acts", [(0, False, False), (1, True, False), (2, True, True),
                                                 (8, True, True), (12, False, True), (16, True, True),
                                                 (32, True, True)])
def test_weight_and_activation_bits_are_each_one_rule_in_configs_spaces_and_the_cli(bits, weights, acts):
    """Weight precisions are 32, 16, 2..8 and 1 wherever they are given (a config, a space's group, `quantize
    --bits`), so every precision a config runs a study can search; maps are 2..16 or 32 (float) everywhere, a
    group's maps quantized."""
    from conftest import run

    def accepted(fn) -> bool:
        try:
            fn()
            return True
        except (ValidationError, OrchestratorError):
            return False

    assert accepted(lambda: QuantConfig(bits=bits)) == weights
    assert accepted(lambda: QuantConfig(layer_bits={"conv": bits})) == weights
    assert accepted(lambda: Dimensions(bits=[8], group_bits={"stage1": [bits]})) == weights
    assert accepted(lambda: QuantConfig(act_bits=bits)) == acts
    assert accepted(lambda: QuantConfig(act_bits=8, group_act_bits={"stage1": bits})) == (acts and bits != 32)
    assert accepted(lambda: Dimensions(act_bits=[8], group_act_bits={"stage1": bits})) == (acts and bits != 32)
    assert accepted(lambda: Dimensions(act_bits=[bits])) == acts
    assert accepted(lambda: PipelineConfig(act_bits=bits, steps=[{"finetune": {"epochs": 0}}])) == acts
    r = run("quantize", "nowhere.pt", "--bits", bits)
    assert ("is not allowed" in r.output) == (not weights), r.output
    r = run("quantize", "nowhere.pt", "--act-bits", bits)
    assert ("is not allowed" in r.output) == (not acts), r.output
