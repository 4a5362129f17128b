"""TRELLIS.2 (microsoft/TRELLIS.2-4B), the second model family: its networks (TRELLIS.2 facts §6-§9).

flow: the dense sparse-structure flow and the sparse shape / texture flows; sc_vae: the SC-VAE decoders and encoders.
The v1 sparse-structure decoder is reused as it is (trellis.models.sparse_structure_vae). Build them through
``trellis.models.from_config`` / ``from_pretrained``: the ckpt JSONs name v1's flow classes, and the args
(pe_mode "rope") choose these.
"""
