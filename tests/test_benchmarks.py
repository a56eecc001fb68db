"""The benchmark scripts' bookkeeping: target checks and BENCHMARKS.md sections."""

from benchmarks import lirpa, report, steps


def _row(method, seconds, temp=1000):
    return {
        "model": "m",
        "batch": 1,
        "method": method,
        "seconds": seconds,
        "compile": 1.0,
        "temp_bytes": temp,
        "vs_natural": 1.0,
        "vs_ibp": 1.0,
    }


def test_targets_report_met_and_the_gap():
    rows = [
        _row("natural", 1.0),
        _row("ibp", 3.0, 1000),
        _row("crown-ibp", 21.0, 3000),
        _row("singleprop-zero", 1.5),
    ]
    lines = "\n".join(steps.check_targets(rows))
    assert "IBP step <= 3.2x natural step: 3.00 -> met" in lines
    assert "CROWN-IBP step <= 3.5x IBP step: 7.00 -> NOT met (gap 2.00x)" in lines
    assert "SingleProp-Zero step <= 0.7x IBP step: 0.50 -> met" in lines
    assert "memory <= 1.5x IBP memory (XLA temp buffers): 3.00 -> NOT met (gap 2.00x)" in lines


def test_sections_are_replaced_in_place_and_prose_kept(tmp_path):
    path = tmp_path / "B.md"
    report.write_section("steps", "Training steps", "first", path)
    text = path.read_text()
    assert "## Training steps" in text and "first" in text
    path.write_text(text + "\nprose after\n")
    report.write_section("steps", "Training steps", "second", path)
    text = path.read_text()
    assert "second" in text and "first" not in text and "prose after" in text
    assert text.count("## Training steps") == 1


def test_lirpa_table_and_missing_install_message(capsys, monkeypatch):
    rows = [
        {
            "model": "m",
            "what": "bound ibp",
            "batch": 2,
            "jaxcert_ms": 2.0,
            "lirpa_ms": 6.0,
            "max_rel_diff": 1e-7,
        }
    ]
    header = dict(date="d", machine="x", jax="j", torch="t", lirpa="l", command="c")
    assert "| m | bound ibp | 2 | 2.0 | 6.0 | 3.00 | 1.0e-07 |" in lirpa.to_markdown(rows, header)
    monkeypatch.setattr(lirpa, "load_auto_lirpa", lambda: (None, "ImportError: no torch"))
    lirpa.main([])
    assert "auto_LiRPA is not available (ImportError: no torch)" in capsys.readouterr().out
