"""sqltradeoff: measure what fine-tuning a chat LLM for text-to-SQL gains on Spider and loses on MMLU."""

__version__ = "0.1.0"
