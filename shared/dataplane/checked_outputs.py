"""A run's outputs checked against its output_schema, one chunk at a time (shared/domain/output_schema.py).

Before the answers of repeated requests are fanned out, each output is extracted and validated; an
invalid one is replaced by its follow-up's answer when that one is valid (postprocess asked again
once, with the validation error), else kept with the error stated. After the fan-out, every valid
output fills the typed columns. Counts go to the summary.
"""
from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from shared.dataplane.assemble import ChunkResults, RecordResult
from shared.dataplane.prepare import record_id
from shared.domain.output_schema import SCHEMA_ERROR, OutputValidator, typed_arrays


class SchemaCheck:
    def __init__(self, validator: OutputValidator, *, taken_names: set[str]) -> None:
        self.validator = validator
        # A property named like an input or result column gets a `schema_` prefix.
        self.fields = [f.with_name(f"schema_{f.name}") if f.name in taken_names else f for f in validator.fields]
        self.valid = self.invalid = self.valid_after_retry = 0

    def invalid_rows(self, first: int, results: ChunkResults) -> list[tuple[str, str, str]]:
        """(recordId, output, why) of each row whose output has text that does not validate."""
        bad = []
        outputs, errors = results.output.to_pylist(), results.error.to_pylist()
        for i, (text, error) in enumerate(zip(outputs, errors)):
            if error is None and text is not None:
                _, problem = self.validator.check(text)
                if problem is not None:
                    bad.append((record_id(first + i), text, problem))
        return bad

    def apply(self, first: int, results: ChunkResults, retried: Mapping[str, RecordResult]) -> ChunkResults:
        """Invalid outputs replaced by a valid follow-up answer, else kept with the error stated."""
        bad = self.invalid_rows(first, results)
        if not bad:
            return results
        outputs, errors = results.output.to_pylist(), results.error.to_pylist()
        tin, tout = results.input_tokens.copy(), results.output_tokens.copy()
        for rid, _, problem in bad:
            i = int(rid) - first
            again = retried.get(rid)
            if again is None:
                errors[i] = f"{problem} (not retried)"
                continue
            tin[i] += again.input_tokens
            tout[i] += again.output_tokens
            if again.error is not None:
                errors[i] = f"{problem}; its retry failed: {again.error}"
                continue
            _, problem_again = self.validator.check(again.text or "")
            if problem_again is None:
                outputs[i] = again.text
                self.valid_after_retry += 1
            else:
                errors[i] = f"{problem}; after a retry with the validation error: {problem_again}"
        return ChunkResults(pa.array(outputs, type=results.output.type), pa.array(errors, type=results.error.type),
                            tin, tout, results.extra)

    def typed(self, results: ChunkResults) -> ChunkResults:
        """The typed columns of every valid output; counts valid and invalid rows."""
        values = []
        for text, error in zip(results.output.to_pylist(), results.error.to_pylist()):
            value = None
            if error is None and text is not None:
                value, _ = self.validator.check(text)
                self.valid += 1
            elif error is not None and error.startswith(SCHEMA_ERROR):
                self.invalid += 1
            values.append(value)
        return ChunkResults(results.output, results.error, results.input_tokens, results.output_tokens,
                            tuple(typed_arrays(values, self.fields)))


