"""Structured (channel) pruning with physical removal.

`channel_graph(model)` finds the groups of channels that must be removed
together (`tfprune.structured.graph`); `shrink(model)` removes the masked
channels for real and checks the smaller model computes the same
(`tfprune.structured.shrink`).
"""

from tfprune.structured.graph import ChannelGraph, ChannelGroup, channel_graph
from tfprune.structured.shrink import GroupChange, ShrinkReport, mask_channels, removable_channels, shrink

__all__ = ["ChannelGraph", "ChannelGroup", "GroupChange", "ShrinkReport", "channel_graph", "mask_channels", "removable_channels", "shrink"]
