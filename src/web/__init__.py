"""The HTTP shell: Litestar controllers, error mapping, the composition root and
the command line. Only ``web.composition`` imports ``adapters``."""
