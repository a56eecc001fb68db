"""Anticipated errors: one base for the command line, the builtin bases kept."""

import pytest

from jaxcert import errors


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.DataError, ValueError),
        (errors.DataNotFound, FileNotFoundError),
        (errors.CheckpointError, FileNotFoundError),
        (errors.TrainingDiverged, FloatingPointError),
        (errors.TrainingInterrupted, KeyboardInterrupt),
    ],
)
def test_each_error_is_a_jaxcert_error_and_keeps_its_builtin_base(cls, builtin):
    assert issubclass(cls, errors.JaxcertError) and issubclass(cls, builtin)


def test_unsupported_operation_keeps_its_fields():
    err = errors.UnsupportedOperation("sin", "model.py:3 (f)", "no rule")
    assert isinstance(err, errors.JaxcertError)
    assert (err.primitive, err.source) == ("sin", "model.py:3 (f)")
    assert str(err) == "unsupported operation 'sin' at model.py:3 (f): no rule"
