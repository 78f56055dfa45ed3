"""X-MethaneWet on Ray."""
__version__ = "0.1.0"
