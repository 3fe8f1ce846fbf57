"""cvloop.config."""
