"""The errors of convert(): what it cannot do, and what strict=True finds left over."""
from __future__ import annotations


class ConvertError(ValueError):
    """convert() cannot do what was asked (the message says what and why)."""


class NotPolynomialError(ConvertError):
    """convert(strict=True): operations that are not polynomial remain; ``report`` lists
    them, ``model`` is the converted model (what convert would have returned)."""

    def __init__(self, report, model=None):
        self.report, self.model = report, model
        left = ", ".join(f"{op} x{n}" for op, n in report.ops().most_common())
        super().__init__(f"the converted model is not polynomial: {left} remain; by module (module, type, op, "
                         f"calls):\n{report.table()}")
