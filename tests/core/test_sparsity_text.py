"""One parser for sparsity text (pof.core.masks.parse_sparsity): the library, pof sweep,
pof prune and pof train read "0.7", "0.3:0.9" and "0.3,0.5" the same way."""

import pytest

from pof.cli.parser import build_parser
from pof.core.masks import check_range, parse_sparsities, parse_sparsity
from pof.errors import PofError
from pof.training.config import TrainConfig, field_kind


def test_one_fraction_and_a_range():
    assert parse_sparsity("0.7") == 0.7 and parse_sparsity(" .25 ") == 0.25
    assert parse_sparsity("0") == 0.0 and parse_sparsity("7e-1") == 0.7
    assert parse_sparsity("0.3:0.9", ranged=True) == (0.3, 0.9)
    assert parse_sparsity("0.7", ranged=True) == 0.7
    assert check_range("0.3:0.9") == (0.3, 0.9)  # a range given as text, in the library too


@pytest.mark.parametrize("text, ranged, msg", [
    ("50%", False, "use fractions: 0.5, not 50%"),
    ("nan", False, "'nan' is not a number"),
    ("inf", True, "'inf' is not a number"),
    ("abc", False, "'abc' is not a number"),
    ("1.0", False, r"\[0, 1\)"),
    ("-0.1", True, r"\[0, 1\)"),
    ("0.3:0.9", False, "one fraction here, not a range"),
    ("0.3:x", True, "lo:hi"),
    ("0.3:0.5:0.7", True, "lo:hi"),
    (":0.5", True, "lo:hi"),
    ("0.9:0.3", True, "lo < hi"),
    ("0.3:1.2", True, r"\[0, 1\)"),
])
def test_bad_text_is_refused_with_the_reason(text, ranged, msg):
    with pytest.raises(PofError, match=msg):
        parse_sparsity(text, ranged=ranged)


def test_a_list_is_each_item_parsed_alike():
    assert parse_sparsities("0.3, .5,0.7") == [0.3, 0.5, 0.7]
    for bad, msg in [("", "no sparsities"), ("0.3,,0.5", "empty item"), ("0.3,50%", "fractions"),
                     ("0.3,nan", "not a number")]:
        with pytest.raises(PofError, match=msg):
            parse_sparsities(bad)


@pytest.mark.parametrize("text", ["50%", "nan", "1.0", "0.3:0.9"])
def test_pof_prune_and_the_library_give_one_message(text, capsys):
    with pytest.raises(PofError) as lib:
        parse_sparsity(text)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "x.safetensors", "--sparsity", text, "--out", "o"])
    assert str(lib.value) in capsys.readouterr().err


@pytest.mark.parametrize("text", ["50%", "0.3:x", "0.9:0.3", "nan"])
def test_pof_train_and_the_config_read_sparsity_with_the_same_parser(text, capsys):
    with pytest.raises(PofError) as lib:
        parse_sparsity(text, ranged=True)
    with pytest.raises(PofError) as cfg:
        field_kind("sparsity").parse(text)
    assert str(cfg.value) == str(lib.value)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--sparsity", text])
    assert str(lib.value) in capsys.readouterr().err


def test_a_range_from_the_command_line_reaches_the_config():
    kind = field_kind("sparsity")
    assert TrainConfig(penalty="pof", sparsity=kind.check("sparsity", kind.parse("0.3:0.9"))
                       ).sparsity == [0.3, 0.9]
