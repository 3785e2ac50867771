"""Pure notification logic: what an event says (facts), who hears it (policy, audience), when
(quiet, retry), in which words (render, values) and through which contract (delivery)."""
