"""Agent Lightning v1 harness for OpenClaw through oclagl (see harness.py)."""

from oclagl_agl.harness import OpenClawHarness

__all__ = ["OpenClawHarness"]
