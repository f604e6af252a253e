"""Validation's tolerance: an exported graph whose error sits just under the limit passes, just
over it fails (and :func:`export.validate.check` names it)."""

from __future__ import annotations

import pytest

from contract.bundle import Bundle
from contract.errors import ValidationError
from export.validate import Reference, check, compare, ort_session
from contract.specs import expand_dims


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_errors_just_below_the_limit_pass_and_just_above_fail(tiny_bundle, tiny_model, precision):
    bundle = Bundle.load(tiny_bundle)
    spec = bundle.spec("vae_encoder")
    path = bundle.path("vae_encoder")
    atol = spec.atol_fp16 if precision == "fp16" else spec.atol
    dims = {"batch": 1, "height": 32, "width": 48}
    inputs = spec.sample_inputs(expand_dims(dims, tiny_model.config), tiny_model.config)
    (graph_output,) = ort_session(path).run(spec.output_names, {n: inputs[n] for n in spec.input_names})

    def validate(error: float) -> dict:
        """The graph against a 'PyTorch' reference that differs from it by ``error`` in one element."""
        reference = graph_output.copy()
        reference.reshape(-1)[7] -= error
        (result,) = compare(path, spec, [Reference(dims, inputs, reference)], atol)
        return result

    below, above = validate(0.9 * atol), validate(1.1 * atol)
    assert below["max_abs"] == pytest.approx(0.9 * atol, rel=1e-3) and below["passed"]
    assert above["max_abs"] == pytest.approx(1.1 * atol, rel=1e-3) and not above["passed"]
    check(spec, [below], precision)
    with pytest.raises(ValidationError, match=f"vae_encoder \\({precision}\\) failed validation.*max_abs .* > atol"):
        check(spec, [below, above], precision)
