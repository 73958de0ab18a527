"""Start an agent run: `python starter.py "TASK" --workspace DIR` (see --help).

The program is the library's (`hitl.start`), which `make demo` runs too.
"""

from hitl.start import main

if __name__ == "__main__":
    main()
