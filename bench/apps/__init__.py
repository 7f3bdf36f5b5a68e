"""Server apps the benchmark starts (gunicorn)."""
