"""stdout sink placeholder."""
