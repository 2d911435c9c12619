"""coordexp-focal-coord: the ``coord_focal`` objective (registered via ``coordexp.objectives``)."""

__version__ = "0.1.0"
