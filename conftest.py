"""Test-wide environment: tests never reach the network, and find the project's offline models."""
import os
from pathlib import Path

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "DEEPEVAL_DISABLE_DOTENV": "1",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

# scripts/setup.sh fetches the small GGUF models into .cache/offline-models of the project.
_models = Path(__file__).resolve().parent / ".cache" / "offline-models"
if any(_models.glob("*.gguf")):
    os.environ.setdefault("SQLTRADEOFF_GGUF_DIR", str(_models))
