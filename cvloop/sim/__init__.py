"""cvloop.sim."""
