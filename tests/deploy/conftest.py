"""Deployment artifact checks: Dockerfile, compose stack, Helm chart, alerts, dashboard, docs.

Each check runs a real tool where one exists (hadolint, Helm's library, kubernetes-validate,
promtool, check-jsonschema, promql-parser) and skips, naming what to install, when the tool
is missing. docs/deployment.md lists the tools and CI's install commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # deploy_support is importable whatever pytest's import mode
    sys.path.insert(0, str(HERE))
