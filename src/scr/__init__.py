"""scr: the Session Completion Runtime."""

__version__ = "0.1.0"
