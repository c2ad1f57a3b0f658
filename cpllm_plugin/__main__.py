"""``python -m cpllm_plugin``: the runtime's commands (score, describe, compare, models).

The ``cpllm`` script adds ``cpllm batch`` from the integrations; the runtime imports no upper
layer (tests/test_layering.py), so this stays the runtime's own command line and runs where
only the runtime is installed. The full ``cpllm`` without its script:
``python -m cpllm_plugin.integrations.commands``.
"""

from .cli import main

main()
