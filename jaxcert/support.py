"""What jaxcert bounds, op by op and domain by domain, read off the rule tables.

``OPS.md`` at the repository root is this module's :func:`support_table` (a test keeps
them equal), so the documented list can never drift from what the code does:

    python -m jaxcert.support > OPS.md
"""

from __future__ import annotations

from typing import Any

from jaxcert import ops
from jaxcert.domains import interval, linear, lipschitz, margins, patches
from jaxcert.relaxations import CURVATURE

__all__ = ["DOMAINS", "support_table"]

# (column heading, the domain's rule table, the methods that use it)
DOMAINS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("IBP", interval.RULES, "ibp, and the intervals of every method"),
    ("linear", linear.RULES, "crown, fastlin, crown-ibp, cap-ibp, the -opt methods"),
    ("patches", patches.RULES, "conv chains inside crown and fastlin (dense otherwise)"),
    ("margins", margins.RULES, "SingleProp, DoubleMargin (approximations)"),
    ("Lipschitz", lipschitz.RULES, "bcp, lmt"),
)


# Where a domain's rule depends on the node: (domain, op) -> what the cell says.
_CONDITIONAL = {
    ("Lipschitz", "even_convex"): "|z| (1); even powers refused (no global constant)",
    ("Lipschitz", "monotone"): "where the function has a global constant (below)",
}


def _cell(domain: str, op: ops.Op, rule: Any) -> str:
    if isinstance(rule, ops.Unsupported):
        return "dense passes" if domain == "patches" else f"refused: {rule.reason}"
    return _CONDITIONAL.get((domain, op.name), "yes")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def support_table() -> str:
    """The Markdown page of every op the tracer accepts and how each domain treats it.

    Example:
      >>> page = support_table()
      >>> "| relu | activation |" in page and "| tanh |" in page
      True
    """
    lines = [
        "# Supported operations",
        "",
        "Generated from the op registry (`jaxcert/ops.py`) and the domains' rule tables by",
        "`python -m jaxcert.support > OPS.md`; `tests/test_support.py` keeps this page equal",
        "to the code. An op missing here is refused by the tracer with",
        "`jaxcert.UnsupportedOperation`, naming the primitive and your source line.",
        "",
        "Domains: "
        + "; ".join(f"**{name}** ({used})" for name, _, used in DOMAINS)
        + ". A refused cell means the methods of that domain raise"
        " `UnsupportedOperation` with that reason (patches fall back to dense passes).",
        "",
        "## Graph operations",
        "",
        "| op | kind | " + " | ".join(name for name, _, _ in DOMAINS) + " |",
        "|---|---|" + "---|" * len(DOMAINS),
    ]
    for op in sorted(ops.graph_ops(), key=lambda o: (o.kind, o.name)):
        cells = [_escape(_cell(name, op, table[op.name])) for name, table, _ in DOMAINS]
        lines.append(f"| {op.name} | {op.kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Non-decreasing functions (`monotone` nodes)",
        "",
        "IBP maps their endpoints; the margin domains do too; BCP needs a global Lipschitz",
        "constant. The linear methods use tangent and chord lines by the function's",
        "curvature, or constant lines where it is not known.",
        "",
        "| function | linear methods | Lipschitz constant (BCP) |",
        "|---|---|---|",
    ]
    for op in sorted((o for o in ops.OPS.values() if o.kind == "monotone"), key=lambda o: o.name):
        curvature = CURVATURE.get(op.name)
        lines_cell = f"lines ({curvature})" if curvature else "constant lines"
        constant = op.lipschitz if isinstance(op.lipschitz, float) else None
        bcp_cell = f"{constant:g}" if constant is not None else "none: refused"
        lines.append(f"| {op.name} | {lines_cell} | {bcp_cell} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(support_table(), end="")
