"""Engine bundles and the engine store."""
