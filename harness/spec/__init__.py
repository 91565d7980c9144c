"""Experiment specs: strict YAML schema, overrides and the matrix of cells.

Imports nothing from the rest of the package (docs/architecture.md, layers).
"""

from harness.spec.errors import DataError, Problem, SpecError, UserError
from harness.spec.load import LoadedSpec, load_spec
from harness.spec.matrix import Cell, expand, resolve, row_labels, run_key, select
from harness.spec.overrides import Override, load_set_file, parse_set
from harness.spec.schema import SCHEMA_VERSION, Config, Spec

__all__ = [
    "SCHEMA_VERSION", "Cell", "Config", "LoadedSpec", "Override", "Problem", "Spec",
    "SpecError", "UserError", "DataError", "expand", "load_set_file", "load_spec", "parse_set", "resolve", "row_labels",
    "run_key", "select",
]
