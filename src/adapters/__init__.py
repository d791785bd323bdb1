"""Adapters: the core's ports on real technology (PostgreSQL, SMTP, ...) and
in memory. They import ``gemini_core``, never ``web``."""
