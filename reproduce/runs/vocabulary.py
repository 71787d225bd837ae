"""A model draft's restricted vocabulary, chosen from text the evaluation never reads.

The 0.5B draft's head has 151,936 rows: 38% of its bytes in int4, for tokens the target almost never emits on code
or news. The draft can run a head of the `size` tokens most frequent in a corpus kept apart from every evaluation
row (XSum's and PubMedQA's training rows, and the Python standard library's own source for code), plus each prompt's
own tokens (reproduce.engine.drafters.RestrictedDrafter). A token outside the head is never proposed; the rule stays
exact for any draft distribution (tests/test_losslessness.py), so a smaller head costs acceptance, never fidelity.

Each domain's counts are normalised before they are summed, so the standard library's ~3M tokens do not crowd out
the news. The counts are cached per tokenizer in $REPRODUCE_CACHE/vocabulary/.
"""

from __future__ import annotations

import hashlib
import io
import json
import sysconfig
from pathlib import Path

import torch

from reproduce import tasks
from reproduce.offline import cache_dir, write_atomically

CORPUS_VERSION = 1  # bump when the corpus below changes: cached counts of another version are recounted
STDLIB_FILES = 400  # the first files of the standard library, sorted by path (tests and test data left out)


def corpus() -> dict[str, list[str]]:
    """Texts per domain, none from an evaluation row (tasks.TASKS[...].train_rows are disjoint from eval_rows)."""
    news = [f"{e.document}\n{e.reference}" for e in tasks.load_examples("xsum", tasks.get_task("xsum").train_rows)]
    science = [e.document for e in tasks.load_examples("pubmedqa", tasks.get_task("pubmedqa").train_rows)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py"))
             if "test" not in p.parts[-2] and not p.name.startswith("test")][:STDLIB_FILES]
    code = []
    for path in files:
        try:
            code.append(path.read_text())
        except (OSError, UnicodeDecodeError):
            continue
    return {"news": news, "science": science, "code": code}


def token_frequencies(tokenizer, vocab_size: int) -> torch.Tensor:
    """Per-token frequency [vocab_size], the mean of each domain's normalised counts (cached per tokenizer)."""
    key = json.dumps([CORPUS_VERSION, STDLIB_FILES, tokenizer.name_or_path, len(tokenizer), vocab_size,
                      sysconfig.get_python_version()])
    path = cache_dir() / "vocabulary" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")
    if path.exists():
        return torch.load(path)
    frequencies = torch.zeros(vocab_size, dtype=torch.float64)
    for texts in corpus().values():
        counts = torch.zeros(vocab_size, dtype=torch.float64)
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids = torch.tensor([i for i in ids if i < vocab_size], dtype=torch.long)
            counts.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64))
        frequencies += counts / counts.sum()
    frequencies /= frequencies.sum()
    buffer = io.BytesIO()
    torch.save(frequencies, buffer)
    write_atomically(path, buffer.getvalue())  # another process may be reading or writing it too
    return frequencies


def choose_kept(frequencies: torch.Tensor, size: int, always: list[int]) -> torch.Tensor:
    """Sorted ids of `size` tokens: `always` (special tokens: EOS must stay proposable), then the most frequent.
    Exactly `size` (int4 heads need a multiple of 16 rows)."""
    kept = {t for t in always if t < len(frequencies)}
    for token in frequencies.argsort(descending=True, stable=True).tolist():
        if len(kept) >= min(size, len(frequencies)):
            break
        kept.add(token)
    return torch.tensor(sorted(kept), dtype=torch.long)


def coverage(kept: torch.Tensor, token_ids: list[int]) -> float:
    """Share of `token_ids` (e.g. the target's own outputs) inside the kept vocabulary."""
    if not token_ids:
        return float("nan")
    return float(torch.isin(torch.tensor(token_ids), kept).float().mean())


def restricted_vocabulary(tokenizer, vocab_size: int, size: int) -> torch.Tensor:
    """The kept ids of a draft head of `size` tokens for this tokenizer (see the module docstring)."""
    return choose_kept(token_frequencies(tokenizer, vocab_size), size, list(tokenizer.all_special_ids))
