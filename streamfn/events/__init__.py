"""AWS event shapes: what handlers receive and what destinations get."""
