#!/usr/bin/env python3
"""A `cvc5` executable over the cvc5 Python bindings (PyPI `cvc5`), for `mcp-authz policy verify`.

Reads SMT-LIB 2 from standard input (or the files named), one command at a time, and answers
as the cvc5 executable does in interactive mode (`cvc5 --lang smt`): each command's output on
standard output, flushed, errors as `(error "...")`. Options given as `--name=value` (such as
`--tlimit-per=10000`) are set on the solver; `--lang smt` is accepted and ignored.

Why: cedar-policy-symcc drives a cvc5 executable and uses features of cvc5 1.3 that the one
Debian ships (1.0.3) lacks; PyPI has cvc5 1.4.2 as a library only. scripts/install-cvc5
installs this script as `.venv/bin/cvc5`.
"""

import sys

import cvc5


def options(argv):
    """(name, value) pairs from `--name=value` / `--name value` arguments, and input files."""
    pairs, files = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if not eq:
                if name in ("lang", "input-language") and i + 1 < len(argv):
                    i += 2
                    continue
                value = "true"
            if name not in ("lang", "input-language"):
                pairs.append((name, value))
        else:
            files.append(arg)
        i += 1
    return pairs, files


def commands(stream):
    """Complete top-level s-expressions from `stream`, one at a time, as text.

    Counts parentheses outside string literals ("..."), quoted symbols (|...|) and comments
    (; to the end of the line), so a command is handed to the parser only when it is whole.
    """
    buf, depth, in_str, in_sym = [], 0, False, False
    for line in stream:
        in_comment = False
        for ch in line:
            if in_comment:
                buf.append(ch)
                continue
            buf.append(ch)
            if in_str:
                if ch == '"':
                    in_str = False  # "" inside a string reads as close then open: same count
            elif in_sym:
                if ch == "|":
                    in_sym = False
            elif ch == '"':
                in_str = True
            elif ch == "|":
                in_sym = True
            elif ch == ";":
                in_comment = True
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    yield "".join(buf)
                    buf = []
        if depth == 0 and not in_str and not in_sym:
            buf = []  # whitespace and comments between commands


def error(message):
    text = str(message).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    sys.stdout.write('(error "%s")\n' % text)
    sys.stdout.flush()


def main():
    pairs, files = options(sys.argv[1:])
    tm = cvc5.TermManager()

    def fresh_solver():
        solver = cvc5.Solver(tm)
        # As the cvc5 executable does for SMT-LIB input.
        solver.setOption("incremental", "true")
        for name, value in pairs:
            solver.setOption(name, value)
        return solver

    solver = fresh_solver()
    sm = cvc5.SymbolManager(tm)
    streams = [open(f) for f in files] if files else [sys.stdin]
    for stream in streams:
        for text in commands(stream):
            parser = cvc5.InputParser(solver, sm)
            parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, text, "stdin")
            try:
                cmd = parser.nextCommand()
            except Exception as e:  # a parse error: the executable reports it and quits
                error("Parse Error: " + str(e))
                return 1
            if cmd.isNull():
                continue
            name = cmd.getCommandName()
            if name == "exit":
                return 0
            if name == "reset":
                # A fresh solver and symbol table, as the executable does on (reset).
                solver = fresh_solver()
                sm = cvc5.SymbolManager(tm)
                continue
            try:
                out = cmd.invoke(solver, sm)
            except Exception as e:
                error(e)
                continue
            if out:
                sys.stdout.write(out if out.endswith("\n") else out + "\n")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
