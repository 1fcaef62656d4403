"""Built-in model trainers: the only model code a node runs (docs/modelling.md)."""
