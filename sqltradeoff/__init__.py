"""sqltradeoff: measure what fine-tuning a chat LLM for text-to-SQL gains on Spider and loses on MMLU."""
import os as _os

# deepeval sends telemetry unless told not to; this tool's metric is local and deterministic.
_os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")

__version__ = "0.1.0"
