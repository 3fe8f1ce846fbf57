"""cvloop.app."""
