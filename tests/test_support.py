"""OPS.md is the support table the code produces, and it covers every op."""

from pathlib import Path

from jaxcert import ops
from jaxcert.support import support_table

OPS_MD = Path(__file__).resolve().parents[1] / "OPS.md"


def test_ops_md_is_generated_from_the_rule_tables():
    assert OPS_MD.read_text() == support_table(), "regenerate: python -m jaxcert.support > OPS.md"


def test_every_registered_op_has_a_row_and_refusals_give_reasons():
    page = support_table()
    for op in ops.OPS.values():
        assert f"| {op.name} |" in page, op.name
    # The margin approximations refuse the two-operand activations, with a reason.
    product = next(line for line in page.splitlines() if line.startswith("| product |"))
    assert "refused: the margin methods" in product and "refused: a product" in product
    tanh = next(line for line in page.splitlines() if line.startswith("| tanh |"))
    assert "lines (s)" in tanh and "| 1 |" in tanh
