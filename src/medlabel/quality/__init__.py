"""Quality assurance: the pure metric core lives in :mod:`medlabel.quality.metrics`."""

__all__: list[str] = []
