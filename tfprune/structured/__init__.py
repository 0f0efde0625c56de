"""Structured (channel) pruning with physical removal.

`channel_graph(model)` finds the groups of channels that must be removed
together (`tfprune.structured.graph`); `shrink(model)` removes the masked
channels for real and checks the smaller model computes the same
(`tfprune.structured.shrink`); `channel_importance(model)` scores each
group's channels by the magnitude of all the weights they take with them
(`tfprune.structured.importance`); `plan_channels(model, macs=0.5)` decides
how many channels each group loses under one MACs/params target
(`tfprune.structured.plan`); `prune_channels` is the one-shot path: plan,
shrink, fine-tune, report (`tfprune.structured.prune`); `ChannelPruning` is
the gradual path: a ``fit`` callback that masks whole groups along a ramp,
then ``callback.shrink()`` removes them (`tfprune.structured.gradual`).
"""

from tfprune.structured.gradual import ChannelPruning, GradualStatus
from tfprune.structured.graph import ChannelGraph, ChannelGroup, channel_graph
from tfprune.structured.importance import ChannelScores, channel_importance, list_channel_importance, lowest_channels
from tfprune.structured.plan import ChannelPlan, GroupPlan, plan_channels
from tfprune.structured.prune import PruneChannelsReport, prune_channels
from tfprune.structured.shrink import ChannelWeight, GroupChange, ShrinkReport, channel_weights, mask_channels, removable_channels, shrink

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "ChannelPlan",
    "ChannelPruning",
    "ChannelScores",
    "ChannelWeight",
    "GradualStatus",
    "GroupChange",
    "GroupPlan",
    "PruneChannelsReport",
    "ShrinkReport",
    "channel_graph",
    "channel_importance",
    "channel_weights",
    "list_channel_importance",
    "lowest_channels",
    "mask_channels",
    "plan_channels",
    "prune_channels",
    "removable_channels",
    "shrink",
]
