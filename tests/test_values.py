"""The shared value types: one rule per quantity, the same in configs, search spaces, the CLI and primitives."""

import pytest
from pydantic import ValidationError

from orchestrator.errors import OrchestratorError
from orchestrator.pipeline import PipelineConfig
from orchestrator.pruning.core import check_ratio
from orchestrator.quant import QuantConfig
from orchestrator.study.space import Dimensions
from orchestrator.values import WEIGHT_BITS, precision_bits, precision_format


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "half", float("nan")])
def test_a_bad_ratio_is_refused_by_the_primitive_the_config_and_the_space_alike(bad):
    with pytest.raises(OrchestratorError, match=r"pruning ratio=.* is not allowed; allowed: a number in \[0, 1\)"):
        check_ratio(bad)
    if not isinstance(bad, bool):  # pydantic reads a bool as a number only in lax int mode; floats refuse it too
        with pytest.raises(ValidationError):
            PipelineConfig(steps=[{"prune": {"method": "global_magnitude", "ratio": bad}}])
        with pytest.raises(ValidationError):
            Dimensions(ratio=[bad])


def test_weight_precision_is_one_encoding_for_spaces_and_quantization_configs():
    assert WEIGHT_BITS == (32, 16, 8, 7, 6, 5, 4, 3, 2, 1)
    for bits in WEIGHT_BITS:
        config = QuantConfig(**precision_format(bits))
        assert config.precision == bits == precision_bits(config.format, config.bits)
    assert QuantConfig(format="bf16").precision == 16
    with pytest.raises(ValidationError, match="weight bits must be 32"):
        Dimensions(bits=[12])
    with pytest.raises(ValidationError):
        QuantConfig(bits=1)  # an int code needs 2 bits at least; 1 bit is the binary format


@pytest.mark.parametrize("bits, weights, acts", [(1, False, False), (2, True, True), (8, True, True),
                                                 (12, False, True), (16, False, True), (32, False, False)])
def test_int_weight_and_activation_bits_are_each_one_rule_in_configs_spaces_and_the_cli(bits, weights, acts):
    """Int weight codes are 2..8 wherever they are given (a config, a space's group, `quantize --bits`), so
    every weight precision a config runs a study can search; quantized maps are 2..16 (32: float in spaces)."""
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
    assert accepted(lambda: Dimensions(act_bits=[8], group_act_bits={"stage1": bits})) == acts
    assert accepted(lambda: Dimensions(act_bits=[bits])) == (acts or bits == 32)  # 32: float maps
    assert accepted(lambda: PipelineConfig(act_bits=bits, steps=[{"finetune": {"epochs": 0}}])) == (acts or bits == 32)
    r = run("quantize", "nowhere.pt", "--bits", bits)
    assert ("is not allowed" in r.output) == (not weights), r.output
