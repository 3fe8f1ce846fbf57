"""cvloop.core."""
