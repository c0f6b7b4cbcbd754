"""run/backends."""
