"""Model processes and weights: the embedded llama.cpp server, servers over transformers models,
loading models in transformers, resolving configured endpoints, and training with TRL."""
