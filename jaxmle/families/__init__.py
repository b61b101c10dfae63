"""Distributions with their Fisher information, for models `predict(theta, obs) -> distribution`.

    import jaxmle as jm
    from jaxmle import families as jf

    def predict(theta, obs):                        # one observation -> its distribution
        return jf.Poisson(jnp.exp(obs["x"] @ theta["b"]))

    model = jf.Model(predict, response="y")         # a logpdf(theta, obs) with .expected
    res = jm.fit(model, init, data, method="fisher", cov="expected", expected=model.expected)

Fisher scoring uses I(theta) = sum_i w_i J_i' F(eta_i) J_i (docs/theory.md): F from the distribution, J by
autodiff. GLM families and links (R's names) for `jaxmle.glm` are here too.
"""

from ._base import Distribution as Distribution
from ._base import LocationScale as LocationScale
from ._censored import Censored as Censored
from ._censored import RightCensored as RightCensored
from ._censored import Truncated as Truncated
from ._distributions import Bernoulli as Bernoulli
from ._distributions import Beta as Beta
from ._distributions import Binomial as Binomial
from ._distributions import Exponential as Exponential
from ._distributions import Gamma as Gamma
from ._distributions import LogNormal as LogNormal
from ._distributions import NegativeBinomial as NegativeBinomial
from ._distributions import Normal as Normal
from ._distributions import Poisson as Poisson
from ._distributions import StudentT as StudentT
from ._distributions import Weibull as Weibull
from ._glmfamily import FAMILIES as FAMILIES
from ._glmfamily import GLMFamily as GLMFamily
from ._glmfamily import glm_family as glm_family
from ._links import LINKS as LINKS
from ._links import Link as Link
from ._links import get_link as get_link
from ._links import log1pexp as log1pexp
from ._model import Model as Model
from ._model import expected as expected
