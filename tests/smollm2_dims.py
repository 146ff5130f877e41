"""SmolLM2-135M's decoder dims (the real model of this project), written out so planner tests
need no weights: 30 layers, 9 heads, 3 KV heads of 64, vocab 49152, tied embeddings."""

from edgekv.export.manifest import DecoderDims

SMOLLM2 = DecoderDims(num_layers=30, hidden_size=576, num_heads=9, num_kv_heads=3, head_dim=64,
                      intermediate_size=1536, vocab_size=49152, rms_norm_eps=1e-5,
                      rope_inv_freq=[1.0], max_position_embeddings=8192)
