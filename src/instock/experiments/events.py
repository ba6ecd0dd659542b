"""Events the experiments context publishes (filled in by the experiments work)."""
