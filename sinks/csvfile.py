"""CSV sink placeholder."""
