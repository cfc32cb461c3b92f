"""Long-Context, Reproduced: the shared package."""
