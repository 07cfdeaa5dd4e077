"""Face detection (RetinaFace), tracking over time, and landmark geometry: a stage of its own, used by
the render and by the training tools (preprocessing, evaluation)."""
