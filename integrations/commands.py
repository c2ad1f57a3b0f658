"""The ``cpllm`` console script: the runtime's commands (:mod:`cpllm_plugin.cli`) with the
integrations' added (``cpllm batch``).

Composed here because the runtime imports no integration; ``cpllm_plugin.cli.main`` itself
is left as it is.
"""

from __future__ import annotations

import copy

from cpllm_plugin import cli

from .batch_cli import batch

main = copy.copy(cli.main)
main.commands = {**cli.main.commands, batch.name: batch}

if __name__ == "__main__":
    main()
