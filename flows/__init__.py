"""cvloop flows."""
