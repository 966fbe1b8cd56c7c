"""MMLU evaluation: lm-evaluation-harness prompts and four ways to get an answer.

* `task.py`: the task side, no model: prompts (byte for byte the harness's default `mmlu` task),
  input records (`load_items`, `validate_items`), answer parsing (`parse_answer`), the
  per-subject summary (`summarize`).
* `scorers.py`: the model side for log-likelihoods: `HFLetterScorer` (tokenized as the harness's
  HFLM, the few-shot prefix's KV cache reused), `BatchedHFLetterScorer` (a whole subject per
  call), `FunctionScorer` (tests, stubs), `naive_loglikelihood` (the reference they are checked
  against).
* `methods.py`: one function per method (`loglik`, `debiased`, `pride`, `generate`; generation
  through `sqltradeoff.generation.generate`) and `evaluate`, which checks the request and runs one.

Everything is importable from `sqltradeoff.mmlu` as before the split.
"""
from .methods import (FunctionGenerator, Generator, HFGenerator, debias, evaluate, letter_prior,  # noqa: F401
                      model_eos_ids, score_questions)
from .scorers import (BatchedHFLetterScorer, FunctionScorer, HFLetterScorer, LetterScorer,  # noqa: F401
                      naive_loglikelihood, shared_length, split_request, token_budget_batches)
from .task import (CONTINUATIONS, METHODS, REQUIRED_FIELDS, description, fewshot_prefix,  # noqa: F401
                   format_question, format_shot, group_dev, load_items, parse_answer, permute, render_prompt,
                   subject_prefixes, summarize, validate_items)
from ..answers import LETTERS  # noqa: F401
