"""Intake's pure rules: what inbound text may contain before it is normalized and published."""
