"""What the fuzz harnesses in fuzz/ share: input files (`inputs`), bugs and their names,
shrinking and saving (`bugs`), time and memory bounds and line coverage (`limits`), the
mutator and its format plug-ins (`mutate`), the built-in fuzzer (`engine`), the atheris
mode (`libfuzzer`) and the command line (`cli`)."""

from fuzzkit.bugs import Bug, HarnessBug, InputTimeout, input_timeout, signature, where
from fuzzkit.engine import FuzzStats, Harness, fuzz
from fuzzkit.inputs import (
    corpus_main,
    input_files,
    read_input,
    save_input,
    slug,
    write_corpus,
)
from fuzzkit.limits import bounded, step, watchdog
from fuzzkit.mutate import Format, Mutator, Part, interesting

__all__ = [
    "Bug", "Format", "FuzzStats", "Harness", "HarnessBug", "InputTimeout", "Mutator", "Part",
    "bounded", "corpus_main", "fuzz", "input_files", "input_timeout", "interesting", "read_input",
    "save_input", "signature", "slug", "step", "watchdog", "where", "write_corpus",
]
