"""Apps the integration tests serve for real, and the code that serves them."""
