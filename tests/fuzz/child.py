"""One target under atheris, in the subprocess ``tests.fuzz.run`` starts:
``python -m tests.fuzz.child TARGET [libFuzzer arguments]``. fep is imported only here, inside
atheris's import instrumentation, so that its code gives coverage feedback."""

from __future__ import annotations

import sys


def main() -> None:
    import atheris  # the fuzz extra installs it

    target, libfuzzer_args = sys.argv[1], sys.argv[2:]
    with atheris.instrument_imports(include=["fep"]):
        from tests.fuzz.targets import collect

        function = collect()[target]
    atheris.Setup([sys.argv[0], *libfuzzer_args], function)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
