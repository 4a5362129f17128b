"""Numerical building blocks: attention, norms, embeddings, transformer blocks and sparse tensors."""
