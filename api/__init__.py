"""The HTTP layer: a litestar app of thin controllers over ``loyalty``."""
