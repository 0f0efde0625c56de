"""Stage 4, masks: the rules and wrappers that hold masks inside the model's graph.

`granularity` (mask rules: numpy references and their TensorFlow twins), `schedule` (the one
ramp, `LayerwiseSchedule`), `wrapper` (`PruneLayer`: tfmot's wrapper with tfprune's rules),
`channel_mask` (`ChannelMask`: keep-vectors of coupled channel groups) and `wrapping`
(`wrap` / `strip` / `clone`: new models, the input never changed).
"""
