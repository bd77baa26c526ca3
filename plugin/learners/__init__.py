"""Meta-learners: metric (Prototypical), memory (Matching) and optimisation-based (MAML), and the baselines."""

from medmeta.learners.base import FewShotLearner, load_learner
from medmeta.learners.baselines import ClassifierBaseline, FineTuneBaseline
from medmeta.learners.maml import MAML, AdaptedModel, load_maml
from medmeta.learners.maml_classifier import MAMLClassifier
from medmeta.learners.matching import MatchingNetwork
from medmeta.learners.protonet import PrototypicalNetwork

#: Learners that :func:`load_learner` may rebuild from a saved ``config.json``, by class name.
LEARNERS: dict[str, type[FewShotLearner]] = {
    cls.__name__: cls
    for cls in (PrototypicalNetwork, MatchingNetwork, MAMLClassifier, ClassifierBaseline, FineTuneBaseline)
}

__all__ = ["LEARNERS", "MAML", "AdaptedModel", "ClassifierBaseline", "FewShotLearner", "FineTuneBaseline",
           "MAMLClassifier", "MatchingNetwork", "PrototypicalNetwork", "load_learner", "load_maml"]
