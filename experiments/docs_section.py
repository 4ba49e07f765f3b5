"""``python experiments/docs_section.py PAGE NAME < TEXT``: replace, in documentation page
PAGE, the text between ``<!-- BEGIN NAME ... -->`` and ``<!-- END NAME -->`` by the
standard input, so that the tables of the docs come from the experiment scripts, never
from hand edits. A page without both markers is an error (exit 2), and nothing is written."""
import re
import sys


def replace_section(doc: str, name: str, text: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)}\b[^>]*-->\n)(.*?)(<!-- END {re.escape(name)} -->)", re.S)
    if len(pattern.findall(doc)) != 1:
        raise ValueError(f"the page needs exactly one <!-- BEGIN {name} ... --> ... <!-- END {name} --> pair")
    return pattern.sub(lambda m: m.group(1) + text.rstrip("\n") + "\n" + m.group(3), doc)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    page, name = sys.argv[1:]
    try:
        with open(page) as f:
            doc = f.read()
        new = replace_section(doc, name, sys.stdin.read())
    except (OSError, ValueError) as e:
        print(f"docs_section: {page}: {e}", file=sys.stderr)
        return 2
    with open(page, "w") as f:
        f.write(new)
    print(f"wrote section {name} of {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
