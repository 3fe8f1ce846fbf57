"""cvloop registry."""
