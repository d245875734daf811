"""Transformer-RL: teach GPT-style transformers to play games.

The Python API (transformer_rl/api.py), imported on first use so that `import transformer_rl`
stays light: load_dataset, load_policy, collect_dataset, train_model, evaluate_checkpoint,
run_experiment, and the errors they raise (UsageError, DamagedData, Busy).
"""

__version__ = "0.1.0"

_API = ("Policy", "VectorPolicy", "collect_dataset", "evaluate_checkpoint", "load_dataset", "load_policy",
        "run_experiment", "train_model")
_ERRORS = ("UsageError", "DamagedData", "Busy")
__all__ = [*_API, *_ERRORS, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from transformer_rl import api

        return getattr(api, name)
    if name in _ERRORS:
        from transformer_rl import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'transformer_rl' has no attribute {name!r}")
