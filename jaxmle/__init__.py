"""jaxmle: maximum-likelihood estimation on JAX. Write one observation's log-density; get the rest."""

from . import families as families
from ._bounds import Bounds as Bounds
from ._bounds import interval as interval
from ._bounds import positive as positive
from ._fit import Problem as Problem
from ._fit import attach as attach
from ._fit import fit as fit
from ._glm import GLMResult as GLMResult
from ._glm import glm as glm
from ._glmer import glmer as glmer
from ._glmer import glmer_nb as glmer_nb
from ._groups import fit_groups as fit_groups
from ._inference import DeltaResult as DeltaResult
from ._inference import delta_method as delta_method
from ._inference import wald_test as wald_test
from ._lmer import lmer as lmer
from ._lrscore import ModelComparison as ModelComparison
from ._lrscore import compare as compare
from ._lrscore import lr_test as lr_test
from ._lrscore import score_test as score_test
from ._mcresult import MonteCarloResult as MonteCarloResult
from ._merresult import MerResult as MerResult
from ._mixed import MixedResult as MixedResult
from ._mixed import fit_mixed as fit_mixed
from ._montecarlo import monte_carlo as monte_carlo
from ._profile import ProfileInterval as ProfileInterval
from ._profile import profile_ci as profile_ci
from ._profile import profile_loglik as profile_loglik
from ._profile import profile_plot as profile_plot
from ._results import FitResult as FitResult
from ._status import Status as Status
from ._testing import TestResult as TestResult
from ._transforms import fit_transformed as fit_transformed
from ._transforms import to_natural as to_natural
from .families import log1pexp as log1pexp

__version__ = "0.1.0"
