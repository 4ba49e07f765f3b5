"""Converting a model into a polynomial network: :func:`convert` and its passes
(activation modules, torch.fx, torch.export), the report of what is not polynomial
(:func:`polynomial_report`), and the errors they raise."""
from .api import MAX_POOL, convert, polynomial_layers
from .errors import ConvertError, NotPolynomialError
from .fx_pass import ConvertedGraphModule
from .readiness import PolynomialReport, polynomial_report

__all__ = ["MAX_POOL", "ConvertError", "ConvertedGraphModule", "NotPolynomialError", "PolynomialReport", "convert",
           "polynomial_layers", "polynomial_report"]
