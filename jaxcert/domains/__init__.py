"""Abstract domains: each module is a table {op -> rule}, like JAX's own rule tables."""
