"""cvloop.stages."""
