"""One router module per capability; ``medlabel.api.app`` mounts them all under /api/v1."""
