"""Non-deep baselines that every results table reports next to the sequence models."""
