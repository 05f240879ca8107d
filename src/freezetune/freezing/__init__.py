"""What trains: parse a spec (pure), resolve it against a model's units, apply it."""

from freezetune.freezing.apply import apply_frozen, frozen_parameters, set_train_modes
from freezetune.freezing.policies import Policy, Progress, make_policy
from freezetune.freezing.spec import SPEC_HELP, FreezeSpec, parse_freeze

__all__ = [
    "SPEC_HELP",
    "FreezeSpec",
    "Policy",
    "Progress",
    "apply_frozen",
    "frozen_parameters",
    "make_policy",
    "parse_freeze",
    "set_train_modes",
]
