"""jaxmle: maximum-likelihood estimation on JAX. Write one observation's log-density; get the rest."""

from ._fit import fit as fit
from ._montecarlo import MonteCarloResult as MonteCarloResult
from ._montecarlo import monte_carlo as monte_carlo
from ._results import FitResult as FitResult
from ._results import Status as Status

__version__ = "0.1.0"
