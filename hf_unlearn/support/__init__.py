"""Support code, not the library: what the demo, the tests and the benchmarks are built from.

- `tiny`: small models built from a config with a tokenizer trained locally, and `memorise`, which makes a target
  model for unlearning (nothing here downloads anything).
- `synthetic`: `generate_lume_like`, fake LUME-like data with the real splits' layout.
- `demo`: `hf-unlearn demo`, the offline miniature of the task.
"""
