"""Pure notification logic: who hears what (policy), in which words (render), how (delivery)."""
