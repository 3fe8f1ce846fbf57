"""cvloop.adapters."""
