"""Training a distilled draft for a target (teacher data, training); the engine only loads the result."""
