"""cvloop tasks."""
