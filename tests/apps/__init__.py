"""Apps and helpers that the integration tests run under real servers."""
