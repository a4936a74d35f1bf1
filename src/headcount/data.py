"""From a task and a tokenizer to padded batches of tensors.

Examples are tokenised once; batches are padded only to their own longest member and, by
default, built from examples of similar length (sorted, longest first, so that an
out-of-memory error shows up on the first batch). Importance and metrics are means over
examples, so the order in which examples are visited does not change them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from headcount.arch import max_positions, takes_token_types
from headcount.distributed import shard
from headcount.errors import ConfigError, DataError
from headcount.labels import map_labels, task_kind
from headcount.tasks.mlm import IGNORE_INDEX, make_blocks, mask_block
from headcount.tasks.registry import MLM, Task


@dataclass(frozen=True)
class EncodedData:
    """Tokenised examples of one task split. `labels` holds a class id or float per example,
    or for masked LM a list per example with IGNORE_INDEX at unmasked positions."""

    kind: str
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list
    pad_token_id: int
    label_mapping: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, indices: list[int]) -> EncodedData:
        def pick(values):
            return None if values is None else [values[i] for i in indices]

        return EncodedData(
            self.kind, pick(self.input_ids), pick(self.token_type_ids), pick(self.labels),
            self.pad_token_id, self.label_mapping,
        )

    def for_this_process(self) -> EncodedData:
        """This process's share of the examples under torch.distributed (else all)."""
        indices = list(range(len(self)))
        share = shard(indices)
        return self if len(share) == len(indices) else self.select(share)

    def batches(
        self, batch_size: int, *, sort_by_length: bool = True, device=None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Padded batches: input_ids, attention_mask, [token_type_ids], labels."""
        order = list(range(len(self)))
        if sort_by_length:
            order.sort(key=lambda i: -len(self.input_ids[i]))
        for start in range(0, len(order), batch_size):
            yield self._collate(order[start:start + batch_size], device)

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """One padded batch of the examples at `indices` (a DataLoader's collate_fn)."""
        return self._collate(list(indices), None)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def _collate(self, indices: list[int], device) -> dict[str, torch.Tensor]:
        width = max(len(self.input_ids[i]) for i in indices)

        def padded(rows, value):
            return torch.tensor([row + [value] * (width - len(row)) for row in rows])

        ids = [self.input_ids[i] for i in indices]
        batch = {
            "input_ids": padded(ids, self.pad_token_id),
            "attention_mask": padded([[1] * len(row) for row in ids], 0),
        }
        if self.token_type_ids is not None:
            batch["token_type_ids"] = padded([self.token_type_ids[i] for i in indices], 0)
        labels = [self.labels[i] for i in indices]
        if self.kind == MLM:
            batch["labels"] = padded(labels, IGNORE_INDEX)
        else:
            dtype = torch.float32 if isinstance(labels[0], float) else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
        if device is not None:
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
        return batch


def choose_subset(
    num_examples: int, *, fraction: float | None = None, max_examples: int | None = None,
    seed: int = 0,
) -> list[int]:
    """Sorted indices of a seeded random subset: `fraction` of the data, then at most
    `max_examples`. The reference study uses 20% of the training data for importance."""
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--fraction {fraction} is not in (0, 1]")
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"--max-examples {max_examples} must be at least 1")
    indices = list(range(num_examples))
    rng = random.Random(seed)
    if fraction is not None and fraction < 1.0:
        indices = sorted(rng.sample(indices, round(fraction * num_examples)))
    if max_examples is not None and max_examples < len(indices):
        indices = sorted(rng.sample(indices, max_examples))
    if not indices:
        raise DataError(
            f"no examples left: {num_examples} examples, fraction={fraction}, "
            f"max_examples={max_examples}"
        )
    return indices


def check_max_length(max_length: int, config) -> None:
    limit = max_positions(config)
    if not 2 < max_length <= limit:
        raise ConfigError(
            f"--max-length {max_length} is not allowed: the model has {limit} positions "
            f"(use 3..{limit})"
        )


def prepare_data(
    task: Task, tokenizer, config, *, split: str, max_length: int = 128,
    fraction: float | None = None, max_examples: int | None = None, seed: int = 0,
) -> EncodedData:
    """Load, subset, label-map and tokenise a task split for a model.

    Example:
        >>> data = prepare_data(resolve_task("sst2", data_dir=glue), tokenizer, model.config,
        ...                     split="dev", max_examples=100)
        >>> next(data.batches(32))["input_ids"].shape
    """
    check_max_length(max_length, config)
    with_types = takes_token_types(config)
    records = task.load(split)
    if not records:
        raise DataError(f"{task.name} split '{split}' has no examples")
    if task.kind == MLM:
        return _prepare_mlm(records, tokenizer, config, max_length, fraction, max_examples, seed,
                            with_types)
    labels, mapping = map_labels(task, [example.label for example in records], config)
    keep = choose_subset(len(records), fraction=fraction, max_examples=max_examples, seed=seed)
    chosen = [records[i] for i in keep]
    texts = [example.text for example in chosen]
    pairs = [example.text_pair for example in chosen]
    has_pairs = any(pair is not None for pair in pairs)
    if has_pairs and not all(pair is not None for pair in pairs):
        raise DataError(f"{task.name}: some examples have a text pair and some do not")
    encoded = tokenizer(
        texts, pairs if has_pairs else None, truncation=True, max_length=max_length,
        return_token_type_ids=with_types,
    )
    return EncodedData(
        kind=task_kind(task, config),
        input_ids=encoded["input_ids"],
        token_type_ids=encoded["token_type_ids"] if with_types else None,
        labels=[labels[i] for i in keep],
        pad_token_id=tokenizer.pad_token_id,
        label_mapping=mapping,
    )


def _prepare_mlm(documents, tokenizer, config, max_length, fraction, max_examples, seed,
                 with_types) -> EncodedData:
    if tokenizer.mask_token_id is None:
        raise DataError("the tokenizer has no mask token; masked LM needs one")
    blocks = make_blocks(tokenizer, documents, max_length)
    keep = choose_subset(len(blocks), fraction=fraction, max_examples=max_examples, seed=seed)
    vocab_size = min(len(tokenizer), config.vocab_size)
    inputs, labels = [], []
    for index in keep:
        ids = blocks[index]
        special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        masked, targets = mask_block(
            ids, special, seed=seed, index=index, mask_token_id=tokenizer.mask_token_id,
            vocab_size=vocab_size,
        )
        inputs.append(masked)
        labels.append(targets)
    return EncodedData(
        kind=MLM,
        input_ids=inputs,
        token_type_ids=[[0] * len(ids) for ids in inputs] if with_types else None,
        labels=labels,
        pad_token_id=tokenizer.pad_token_id,
        label_mapping="masked tokens",
    )
