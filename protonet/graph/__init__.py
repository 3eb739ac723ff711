"""From a NetParameter to a build plan: NetState filtering and automatic Split insertion."""

from .splits import insert_splits  # noqa: F401
from .state import filter_net, make_state, state_meets_rule  # noqa: F401
