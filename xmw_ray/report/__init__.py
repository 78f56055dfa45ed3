"""One HTML page gathering what a pipeline run left behind."""
