"""Items: the annotatable units of a project (a 2D image, a series volume, a slide)."""
