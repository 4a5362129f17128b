"""Cameras and rasterisers (pure PyTorch, correct on any device)."""
