"""tilekeeper: a STAC-centric production catalogue and job tracker for openEO campaigns."""

__version__ = "0.1.0"
