"""The Gradio demo (needs the `demo` extra: pip install 'hfgal[demo]'; gradio is imported only by `build_demo`):
the app (app), its example galaxies (examples), occlusion maps (saliency), and the Hugging Face Space (space)."""

from __future__ import annotations

from .app import DEFAULT_TITLE, GalaxyDemo, build_demo

__all__ = ["DEFAULT_TITLE", "GalaxyDemo", "build_demo"]
