"""kv2d1's verification engine: the shared model, sources, normalisation and the diff.

Nothing here imports click, tabulate or a renderer; the CLI (`kv2d1`) and the reports sit on top.
"""

from __future__ import annotations

__version__ = "0.1.0"
TOOL_NAME = "kv2d1"
