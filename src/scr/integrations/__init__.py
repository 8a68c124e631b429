"""Integrations that capture session completions where they happen.

``openai`` (the official SDK), ``asgi`` (an OpenAI-compatible gateway) and ``langchain``
(a callback handler) each need their third-party package (``pip install 'scr[openai]'``,
``'scr[langchain]'``) and are imported by name. ``session(...)`` groups what the
OpenAI-shaped integrations capture inside it under one session id.
"""

from scr.integrations.completions import session

__all__ = ["session"]
