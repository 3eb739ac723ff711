"""NetState filtering: which layers a net built for a phase, level and stages contains.

A layer may have include rules or exclude rules, not both. With no include rules it is in the
net unless an exclude rule matches; with include rules it is in the net if any of them matches.
A rule matches when its phase (if set) equals the state's, the state's level lies within
min_level/max_level, the state has every ``stage`` of the rule and none of its ``not_stage``.
"""

from ..errors import ProtonetError
from ..proto import caffe_pb2


def make_state(phase=None, level=None, stages=(), base=None):
    """A NetState: ``base`` (the net file's own state) overridden by the given fields.

    As Caffe's Net constructor: the phase replaces, stages are added, the level replaces.
    """
    state = caffe_pb2.NetState()
    if base is not None:
        state.CopyFrom(base)
    if phase is not None:
        state.phase = phase
    if level is not None:
        state.level = level
    for stage in stages:
        if stage not in state.stage:
            state.stage.append(stage)
    return state


def state_meets_rule(state, rule):
    """True when ``state`` satisfies every condition of ``rule``."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer_param, state):
    """Caffe's FilterNet decision for one layer."""
    if layer_param.include and layer_param.exclude:
        raise ProtonetError("specify either include rules or exclude rules, not both",
                            layer=layer_param.name, layer_type=layer_param.type)
    if layer_param.include:
        return any(state_meets_rule(state, rule) for rule in layer_param.include)
    return not any(state_meets_rule(state, rule) for rule in layer_param.exclude)


def filter_net(net_param, state, lines=None):
    """Copy of ``net_param`` with only the layers ``state`` includes (and their source lines)."""
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net_param)
    del filtered.layer[:]
    kept_lines = []
    for index, layer_param in enumerate(net_param.layer):
        if layer_included(layer_param, state):
            filtered.layer.add().CopyFrom(layer_param)
            kept_lines.append(lines[index] if lines else None)
    filtered.state.CopyFrom(state)
    return filtered, kept_lines
