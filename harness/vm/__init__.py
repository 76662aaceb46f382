"""vm stage."""
