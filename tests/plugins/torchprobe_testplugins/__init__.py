"""Plugins that misbehave on purpose: real crashes, real GIL-holding hangs."""
