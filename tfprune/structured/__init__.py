"""Structured (channel) pruning with physical removal.

`channel_graph(model)` finds the groups of channels that must be removed
together (`tfprune.structured.graph`); `shrink(model)` removes the masked
channels for real and checks the smaller model computes the same
(`tfprune.structured.removal`); `channel_importance(model)` scores each
group's channels by the magnitude of all the weights they take with them
(`tfprune.structured.importance`); `tfprune.plan(model, macs=0.5, granularity="channel")` decides
how many channels each group loses under one MACs/params target
(search and cost model in `tfprune.structured.plan`); `prune_channels` is the
one-shot path: plan, shrink, fine-tune, report (`tfprune.structured.prune`);
the gradual path is the one `tfprune.Pruning` callback on a model wrapped
with ``granularity="channel"``, then ``finalize()``
(`prune_channels_gradually` runs it end to end).
"""

from tfprune.structured.gradual import prune_channels_gradually
from tfprune.structured.graph import ChannelGraph, ChannelGroup, channel_graph
from tfprune.structured.importance import ChannelScores, channel_importance, lowest_channels
from tfprune.structured.prune import PruneChannelsReport, prune_channels
from tfprune.structured.removal import ChannelWeight, GroupChange, ShrinkReport, channel_weights, mask_channels, removable_channels, shrink

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "ChannelScores",
    "ChannelWeight",
    "GroupChange",
    "PruneChannelsReport",
    "ShrinkReport",
    "channel_graph",
    "channel_importance",
    "channel_weights",
    "lowest_channels",
    "mask_channels",
    "prune_channels",
    "prune_channels_gradually",
    "removable_channels",
    "shrink",
]
