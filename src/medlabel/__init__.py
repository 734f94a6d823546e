"""medlabel: a self-hostable platform for annotating medical images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
