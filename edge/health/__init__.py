"""Health: what the box observes about every stage (metrics, liveness, GPU, incidents)."""
